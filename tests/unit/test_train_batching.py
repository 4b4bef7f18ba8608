"""Batching: exact label masks through the chat template, padding never a target, packed rows restart
positions, per-(seed, epoch) order, token cache, and bad split files named by row."""

from __future__ import annotations

import json

import pytest
import torch

from qatune.console import QatuneError
from qatune.models.load import load_tokenizer
from qatune.prompts import IGNORE_INDEX, encode_pair
from qatune.train import batching, lengths
from qatune.train.batching import Example, collate, epoch_order, load_examples, plan_batches, shared_prefix_len
from train_runs import pairs, write_data


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def _examples(tmp_path, tok, n=6):
    run = write_data(tmp_path / "run", n_train=n, n_val=1)
    return load_examples(run / "data" / "train.jsonl", tok, 96, None, "tiny")


def test_labels_cover_the_answer_and_end_of_turn_token_only(tmp_path, tok):
    ex = _examples(tmp_path, tok, n=2)[1]
    row = pairs(2)[1]
    prompt = tok.encode(
        f"<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    answer = tok.encode(row["answer"], add_special_tokens=False)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert ex.input_ids == prompt + answer + [eot]
    assert ex.labels == [IGNORE_INDEX] * len(prompt) + answer + [eot]
    assert ex.labels[-1] == tok.eos_token_id == eot
    assert tok.pad_token_id not in ex.input_ids and tok.pad_token_id != tok.eos_token_id


def test_padded_batch_targets_are_shifted_labels_and_padding_is_never_a_target(tmp_path, tok):
    exs = _examples(tmp_path, tok)
    batch = collate(exs, tok.pad_token_id)
    ids, mask, tgt = batch["input_ids"], batch["attention_mask"], batch["targets"]
    assert len({len(e.input_ids) for e in exs}) > 1, "need different lengths to exercise padding"
    for row, e in enumerate(exs):
        n = len(e.input_ids)
        assert ids[row, :n].tolist() == e.input_ids
        assert tgt[row, : n - 1].tolist() == e.labels[1:]  # position t predicts token t+1
        assert mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        assert (ids[row, n:] == tok.pad_token_id).all()
        assert (tgt[row, n - 1 :] == IGNORE_INDEX).all()  # last real token and padding predict nothing
    assert int((tgt != IGNORE_INDEX).sum()) == sum(e.answer_tokens for e in exs)
    assert batch["position_ids"][0].tolist() == list(range(ids.shape[1]))


def test_shared_prefix_is_cut_before_the_first_label(tmp_path, tok):
    exs = _examples(tmp_path, tok)
    p = shared_prefix_len(exs)
    first = exs[0].input_ids
    assert p > 0 and all(e.input_ids[:p] == first[:p] for e in exs)
    assert all(e.labels[: p + 1] == [IGNORE_INDEX] * (p + 1) for e in exs)
    batch = collate(exs, tok.pad_token_id, prefix_len=p)
    assert batch["prefix_ids"][0].tolist() == first[:p]
    assert batch["input_ids"][0, : len(first) - p].tolist() == first[p:]
    assert batch["position_ids"][0, 0].item() == p
    assert batch["attention_mask"].shape[1] == p + batch["input_ids"].shape[1]
    assert int((batch["targets"] != IGNORE_INDEX).sum()) == sum(e.answer_tokens for e in exs)


def test_packed_row_restarts_positions_and_has_no_padding(tmp_path, tok):
    exs = _examples(tmp_path, tok, n=3)
    batch = collate(exs, tok.pad_token_id, packed=True)
    assert batch["attention_mask"] is None and batch["input_ids"].shape[0] == 1
    assert batch["input_ids"][0].tolist() == sum((e.input_ids for e in exs), [])
    expected_pos = sum((list(range(len(e.input_ids))) for e in exs), [])
    assert batch["position_ids"][0].tolist() == expected_pos
    ends = torch.cumsum(torch.tensor([len(e.input_ids) for e in exs]), 0) - 1
    assert (batch["targets"][0, ends] == IGNORE_INDEX).all()  # no target across an example boundary
    assert int((batch["targets"] != IGNORE_INDEX).sum()) == sum(e.answer_tokens for e in exs)


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(30, 42, 1) == epoch_order(30, 42, 1)
    assert epoch_order(30, 42, 1) != epoch_order(30, 42, 2)
    assert epoch_order(30, 42, 1) != epoch_order(30, 7, 1)
    assert sorted(epoch_order(30, 42, 3)) == list(range(30))


def test_length_grouping_covers_every_example_once_and_cuts_padding():
    lengths = [10 + (i * 37) % 90 for i in range(64)]
    grouped = plan_batches(lengths, 42, 1, 4, grouped=True)
    plain = plan_batches(lengths, 42, 1, 4, grouped=False)
    for plan in (grouped, plain):
        assert sorted(i for b in plan for i in b) == list(range(64))
        assert all(len(b) <= 4 for b in plan)

    def padding(plan):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in plan)

    assert padding(grouped) < padding(plain) / 3
    assert grouped == plan_batches(lengths, 42, 1, 4, grouped=True)


def test_auto_batch_size_fills_the_token_budget_but_keeps_enough_steps():
    assert batching.auto_batch_size([50] * 1000, 1000) == 20
    assert batching.auto_batch_size([50] * 24, 1000) == 3  # 24 pairs: at least 8 steps per epoch
    assert batching.auto_batch_size([5000] * 100, 1000) == 1


def test_token_cache_is_reused_and_keyed_by_max_length(tmp_path, tok, monkeypatch):
    run = write_data(tmp_path / "run", n_train=5, n_val=1)
    cache = tmp_path / "cache"
    first = load_examples(run / "data" / "train.jsonl", tok, 96, cache, "tiny")
    assert len(list(cache.glob("train-*.json"))) == 1
    monkeypatch.setattr(batching, "encode_pair", lambda *a, **k: pytest.fail("cache not used"))
    assert load_examples(run / "data" / "train.jsonl", tok, 96, cache, "tiny") == first
    monkeypatch.undo()
    load_examples(run / "data" / "train.jsonl", tok, 64, cache, "tiny")
    assert len(list(cache.glob("train-*.json"))) == 2


@pytest.mark.parametrize(
    "line, what",
    [
        ({"id": "a", "question": "Q?"}, "each line needs"),
        ({"id": "a", "question": "  ", "answer": "A"}, "empty question or answer"),
        (["not", "an", "object"], "each line needs"),
    ],
)
def test_bad_rows_are_named_by_file_and_row(tmp_path, tok, line, what):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"id": "x", "question": "Q?", "answer": "A."})
    path.write_text(good + "\n" + json.dumps(line) + "\n")
    with pytest.raises(QatuneError, match=what) as err:
        load_examples(path, tok, 96, None, "tiny")
    assert str(path) in str(err.value) and "row 2" in str(err.value)


def test_prompts_longer_than_max_length_are_skipped(tmp_path, tok):
    path = tmp_path / "train.jsonl"
    rows = [{"id": "long", "question": "word " * 200, "answer": "A."}, {"id": "ok", "question": "Q?", "answer": "A."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.id for e in load_examples(path, tok, 32, None, "tiny")] == ["ok"]


def test_answers_cut_at_max_length_are_kept_and_named_in_a_warning(tmp_path, tok, capsys):
    """A cut answer loses its end-of-turn token, so the model would not learn where it ends: say so."""
    path = tmp_path / "train.jsonl"
    rows = [{"id": "long", "question": "Q?", "answer": "word " * 200}, {"id": "ok", "question": "Q?", "answer": "A."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(path, tok, 48, None, "tiny")
    assert [len(e.input_ids) for e in examples][0] == 48
    assert "train.jsonl: 1 answer(s) cut at max_length=48" in " ".join(capsys.readouterr().err.split())


def test_example_answer_tokens():
    assert Example("x", [1, 2, 3], [IGNORE_INDEX, 2, 3]).answer_tokens == 2


def _setup(n_closed: int, n_grounded: int, share: float, batch_size: int = 3):
    from qatune.config import TrainConfig
    from qatune.train.loop import Setup

    closed = [Example(f"q{i}", [1] * (3 + i % 4), [-100, 2, 3] + [4] * (i % 4)) for i in range(n_closed)]
    grounded = [Example(f"q{i}-rag", [1] * 20, [-100] * 18 + [2, 3]) for i in range(n_grounded)]
    return Setup(
        rundir=None,
        tc=TrainConfig(grounded_share=share),
        accelerator=None,
        model=None,
        loss=None,
        params={},
        train=closed + grounded,
        grounded_start=n_closed if n_grounded else None,
        val=[],
        val_unseen=[],
        pad_id=0,
        batch_size=batch_size,
        prefix_len=0,
        packed=False,
        save_adapter=lambda name, extra: None,
        log=None,
    )


def _trained(s, epoch):
    from qatune.train.loop import epoch_steps

    return [i for step in epoch_steps(s, epoch) for micro in step for i in micro]


def test_a_grounded_share_rotates_the_grounded_examples_and_keeps_every_closed_book_one():
    """With half the grounded examples per epoch, each epoch trains every closed-book example once and a
    different half of the grounded ones, so two epochs ask every pair grounded exactly once; every epoch has
    the same number of steps (the learning-rate schedule counts on it)."""
    s = _setup(n_closed=12, n_grounded=8, share=0.5)
    seen = {e: _trained(s, e) for e in (1, 2, 3)}
    for indices in seen.values():
        assert sorted(i for i in indices if i < 12) == list(range(12))
        assert len([i for i in indices if i >= 12]) == 4 and len(set(indices)) == len(indices)
    assert sorted(i for e in (1, 2) for i in seen[e] if i >= 12) == list(range(12, 20))
    from qatune.train.loop import epoch_steps

    assert len({len(epoch_steps(s, e)) for e in (1, 2, 3, 4)}) == 1


def test_the_full_grounded_share_trains_every_example_every_epoch():
    s = _setup(n_closed=5, n_grounded=5, share=1.0)
    assert sorted(_trained(s, 1)) == list(range(10))
    assert sorted(_trained(_setup(n_closed=5, n_grounded=0, share=0.3), 2)) == list(range(5))


def test_reworded_and_grounded_rows_train_the_head_of_a_long_answer(tmp_path, tok):
    """With a head, a reworded question or a grounded example keeps its answer's first tokens (no end-of-turn
    when cut there); the pair's own question and short answers train whole, and max_length auto fits the
    longest pair."""
    long_answer = " ".join(f"step {i} of the install is to run the tool again." for i in range(12))
    rows = [
        {"id": "1", "question": "How do I install it?", "answer": long_answer},
        {"id": "1-r1", "question": "How is it installed?", "answer": long_answer, "augmented_from": "1"},
        {"id": "1-rag", "question": "Reference Q&A: ...\n\nQuestion: How?", "answer": long_answer, "grounded": True},
        {"id": "2-r1", "question": "Short?", "answer": "Yes.", "augmented_from": "2"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    length = lengths.fitted_length(path, tok, None)
    whole, reworded, grounded, short = load_examples(path, tok, length, None, "tiny", head=16)
    answer = tok.encode(long_answer, add_special_tokens=False)
    longest = max(len(encode_pair(tok, r["question"], r["answer"], 10**6).input_ids) for r in rows)
    assert length == longest and whole.labels[-1] == tok.eos_token_id  # no answer cut
    assert [t for t in whole.labels if t != IGNORE_INDEX][:-1] == answer
    for headed in (reworded, grounded):
        assert [t for t in headed.labels if t != IGNORE_INDEX] == answer[:16]
    assert short.labels[-1] == tok.eos_token_id
    assert lengths.fitted_length(path, tok, 64) == 64  # at most the model's context


def test_with_leads_closed_book_rows_train_the_opening_to_a_sentence_end_and_end_there(tmp_path, tok):
    """With leads, a pair's own question and its rewording train the answer to its last sentence end within the
    head, then end-of-turn; a grounded example still trains the head with no end-of-turn; a short answer is whole."""
    from qatune.train.leads import leader

    long_answer = " ".join(f"Step {i} of the install is to run the tool again." for i in range(12))
    rows = [
        {"id": "1", "question": "How do I install it?", "answer": long_answer},
        {"id": "1-r1", "question": "How is it installed?", "answer": long_answer, "augmented_from": "1"},
        {"id": "1-rag", "question": "Reference Q&A: ...\n\nQuestion: How?", "answer": long_answer, "grounded": True},
        {"id": "2", "question": "Short?", "answer": "Yes, it is."},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lead = leader(tok, 32)
    own, reworded, grounded, short = load_examples(path, tok, 512, None, "tiny", head=32, lead=lead)
    led = lead(long_answer)
    assert long_answer.startswith(led) and led.endswith("again.") and len(led) < len(long_answer)
    assert len(tok.encode(led, add_special_tokens=False)) <= 32
    for ex in (own, reworded):
        assert [t for t in ex.labels if t != IGNORE_INDEX] == tok.encode(led, add_special_tokens=False) + [
            tok.eos_token_id
        ]
    assert [t for t in grounded.labels if t != IGNORE_INDEX] == tok.encode(long_answer, add_special_tokens=False)[:32]
    assert short.labels[-1] == tok.eos_token_id and lead("Yes, it is.") == "Yes, it is."
    no_end = "word " * 80
    assert lead(no_end) == tok.decode(tok.encode(no_end, add_special_tokens=False)[:32]).rstrip()


def test_long_rows_share_a_batch_with_fewer_others():
    """Rows far longer than most are batched fewer at a time (padded size bounded); rows of similar lengths keep
    the fixed batch size and every row is planned once."""
    similar = [50 + i % 30 for i in range(96)]
    plan = batching.plan_batches(similar, 1, 1, 8)
    assert sorted(len(b) for b in plan) == [8] * 12
    mixed = similar[:90] + [900] * 6
    plan = batching.plan_batches(mixed, 1, 1, 8)
    assert sorted(i for b in plan for i in b) == list(range(96))
    cap = batching.PAD_FACTOR * 8 * 65  # the median length is 65 here
    assert all(len(b) * max(mixed[i] for i in b) <= cap for b in plan if len(b) > 1)
    assert any(len(b) < 8 for b in plan if max(mixed[i] for i in b) == 900)


def test_grounded_share_auto_halves_for_long_answers():
    assert lengths.grounded_share("auto", [70, 80, 124]) == 1.0  # characters
    assert lengths.grounded_share("auto", [700, 1600, 120]) == 0.5
    assert lengths.grounded_share(0.25, [700]) == 0.25
