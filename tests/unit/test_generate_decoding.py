"""Greedy decoding: the lone row's lookup drafts keep exactly the greedy tokens while taking fewer forward passes."""

from __future__ import annotations

import pytest
import torch

from greedy_reference import hf_greedy
from qatune.generate.decoding import greedy_decode, lookup_draft
from qatune.models.load import load_base, load_tokenizer
from qatune.models.placement import choose_placement
from qatune.prompts import messages_for, prompt_ids


def test_draft_copies_what_followed_the_latest_ngram():
    assert lookup_draft([5, 6, 7, 1, 5, 6, 8, 9, 5, 6], 3) == [8, 9, 5]  # latest "5 6", not the first
    assert lookup_draft([1, 2, 3, 9, 1, 2, 3, 4, 2, 3], 2) == [4, 2]  # no earlier "4 2 3": the 2-gram "2 3"
    assert lookup_draft([1, 2, 3, 4], 5) == []  # nothing repeats
    assert lookup_draft([1, 2, 1, 2], 0) == []


def test_draft_runs_a_loop_on_past_the_end():
    assert lookup_draft([7, 3, 4, 3, 4], 5) == [3, 4, 3, 4, 3]  # period 2, drafted beyond the known text
    assert lookup_draft([9, 9, 9], 4) == [9, 9, 9, 9]


def _model(folder):
    return load_base(str(folder), choose_placement()), load_tokenizer(str(folder))


def test_a_looping_row_takes_fewer_forward_passes(tiny_model_dir):
    """The near-constant tiny model repeats one token: drafted ten at a time, with HF generate's tokens."""
    model, tok = _model(tiny_model_dir)
    ids = torch.tensor([prompt_ids(tok, messages_for("How is the grade computed?"))])
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    with torch.inference_mode():
        got = greedy_decode(model, ids, torch.ones_like(ids), 60, [])
    hook.remove()
    assert got == [hf_greedy(model, tok.pad_token_id, ids[0].tolist(), 60, None)]
    assert len(set(got[0])) <= 2 and len(calls) <= 12


def _oracle(greedy: dict[tuple[int, ...], list[int]], vocab: int):
    """A drafter that knows each prompt's greedy continuation and spoils one draft in three at a moving
    position, so drafts are accepted whole, in part, or not at all."""
    calls = []

    def draft(context: list[int], limit: int) -> list[int]:
        calls.append(1)
        prompt = max((p for p in greedy if tuple(context[: len(p)]) == p), key=len)
        done = len(context) - len(prompt)
        tokens = list(greedy[prompt][done : done + limit])
        if tokens and len(calls) % 3 == 1:
            at = len(calls) % len(tokens)
            tokens[at] = (tokens[at] + 1) % vocab
        return tokens

    return draft, calls


def test_verified_drafts_keep_exactly_the_greedy_tokens(lively_model_dir, monkeypatch):
    """Accepted, partly accepted and rejected drafts (the rejected part cropped from the KV cache, positions
    moved on by what was kept) leave exactly the tokens of plain greedy decoding, in fewer passes."""
    from qatune.generate import decoding

    model, tok = _model(lively_model_dir)
    prompt = prompt_ids(tok, messages_for("How is the grade computed?"))
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        (plain,) = greedy_decode(model, ids, torch.ones_like(ids), 60, [], lookup=False)
        drafter, drafts = _oracle({tuple(prompt): plain}, model.config.vocab_size)
        monkeypatch.setattr(decoding, "lookup_draft", drafter)
        (got,) = greedy_decode(model, ids, torch.ones_like(ids), 60, [])
    assert got == plain == hf_greedy(model, tok.pad_token_id, ids[0].tolist(), 60, None)
    assert len(drafts) < 30


QUESTIONS = ["How is the grade computed?", "When?", "Who is the instructor?", "Is there a final exam?", "Why?", "Room?"]


@pytest.mark.parametrize("rows", [2, 3, 6])
def test_drafted_rows_stop_where_greedy_decoding_stops(lively_model_dir, monkeypatch, rows):
    """Left-padded rows (six start undrafted and are drafted once four are left) each keep their own count of
    drafted tokens per pass, the rest of their draft masked out of the cache, and each ends at its stop token
    wherever it falls in a draft: every row gets HF generate's tokens for its prompt alone."""
    from qatune.generate import decoding

    model, tok = _model(lively_model_dir)
    prompts = [prompt_ids(tok, messages_for(q)) for q in QUESTIONS[:rows]]
    tok.padding_side = "left"
    batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert int(mask.sum(1).min()) < ids.shape[1], "some rows must carry left padding"
    with torch.inference_mode():
        free = greedy_decode(model, ids, mask, 50, [], lookup=False)
        drafter, _ = _oracle({tuple(p): f for p, f in zip(prompts, free, strict=True)}, model.config.vocab_size)
        monkeypatch.setattr(decoding, "lookup_draft", drafter)
        for shift in range(0, 12, 3):
            stop = sorted({f[(5 + 7 * i + shift) % 45] for i, f in enumerate(free)})
            got = greedy_decode(model, ids, mask, 50, stop)
            for row, prompt in enumerate(prompts):
                expected = hf_greedy(model, tok.pad_token_id, prompt, 50, stop)
                assert got[row] == expected, (shift, row)
            assert len({len(t) for t in got}) > 1, "rows must stop at different steps"
        capped = greedy_decode(model, ids, mask, 7, [])
    assert [len(t) for t in capped] == [7] * rows


def _left_padded_and_watched(model, tok, prompts: list[list[int]]):
    """The prompts left-padded (ids, mask), and a hook recording the input shape of every model pass into the
    returned list (remove the hook when done)."""
    tok.padding_side = "left"
    batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    return batch["input_ids"], batch["attention_mask"], shapes, hook


def test_the_start_all_prompts_share_runs_once(lively_model_dir):
    """The tokens every row starts with (system prompt, role header, here also a common opening) go through
    the model once, as a one-row pass whose cache all rows share (left padding then sits between it and each
    row's rest); every row still gets HF generate's tokens for its prompt alone."""
    model, tok = _model(lively_model_dir)
    prompts = [prompt_ids(tok, messages_for(f"About the syllabus: {q}")) for q in QUESTIONS]
    shared = next(i for i in range(min(map(len, prompts))) if len({p[i] for p in prompts}) > 1)
    assert shared >= 8
    ids, mask, shapes, hook = _left_padded_and_watched(model, tok, prompts)
    with torch.inference_mode():
        got = greedy_decode(model, ids, mask, 20, [], lookup=False)
    hook.remove()
    assert shapes[:2] == [(1, shared), (len(prompts), ids.shape[1] - shared)]
    for prompt, tokens in zip(prompts, got, strict=True):
        assert tokens == hf_greedy(model, tok.pad_token_id, prompt, 20, None)


def test_each_pair_of_prompts_shares_its_own_start(lively_model_dir):
    """With `group=2`, each two consecutive prompts (one long context asked two ways) run their shared start once,
    in one left-padded pass of one row per pair; every row still gets HF generate's tokens and the prompt pass's
    last logits for its prompt alone."""
    model, tok = _model(lively_model_dir)
    contexts = ["Reference: " + " ".join(QUESTIONS[i:]) for i in range(3)]
    prompts = [prompt_ids(tok, messages_for(f"{c}\nQuestion: {q}")) for c in contexts for q in ("Room?", "")]
    ids, mask, shapes, hook = _left_padded_and_watched(model, tok, prompts)
    seen: list[torch.Tensor] = []
    with torch.inference_mode():
        got = greedy_decode(model, ids, mask, 12, [], lookup=False, group=2, on_prompt=lambda c, lg, m: seen.append(lg))
        alone = [model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts]
    hook.remove()
    assert shapes[0][0] == 3 and shapes[1][0] == 6 and shapes[1][1] < ids.shape[1] - 20
    for row, (prompt, tokens) in enumerate(zip(prompts, got, strict=True)):
        assert tokens == hf_greedy(model, tok.pad_token_id, prompt, 12, None)
        assert torch.allclose(seen[0][row].float(), alone[row].float(), atol=1e-4)


@pytest.mark.parametrize("lookup", [False, True])
def test_each_row_stops_at_its_own_budget_or_early_end(lively_model_dir, lookup):
    """Per-row budgets cut each row at its own length, and `stop_early` ends a row at the token it first says
    so (drafted rows too, wherever that falls in a draft); every row keeps plain greedy decoding's tokens."""
    model, tok = _model(lively_model_dir)
    prompts = [prompt_ids(tok, messages_for(q)) for q in QUESTIONS]
    tok.padding_side = "left"
    batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    budgets = [5, 40, 12, 40, 3, 25]
    early_at = {1: 9, 3: 17}  # row -> the token count at which stop_early says stop
    asked: list[tuple[int, int]] = []

    def stop_early(row: int, tokens: list[int]) -> bool:
        asked.append((row, len(tokens)))
        return early_at.get(row) == len(tokens)

    with torch.inference_mode():
        free = greedy_decode(model, ids, mask, 40, [], lookup=False)
        got = greedy_decode(model, ids, mask, 40, [], lookup=lookup, budgets=budgets, stop_early=stop_early)
    for row, tokens in enumerate(got):
        length = early_at.get(row, budgets[row])
        assert tokens == free[row][:length], row
    assert all(n <= 64 for _, n in asked)


@pytest.mark.parametrize("lookup", [False, True])
def test_a_looping_answer_ends_before_its_repeat(tiny_model_dir, lookup):
    """The near-constant tiny model loops at once: with cut_loops its answer ends where a LOOP_TOKENS-token span
    would repeat, without the repeat; what stands before is the greedy answer's start."""
    from qatune.generate.decoding import LOOP_TOKENS

    model, tok = _model(tiny_model_dir)
    ids = torch.tensor([prompt_ids(tok, messages_for("How is the grade computed?"))])
    with torch.inference_mode():
        (free,) = greedy_decode(model, ids, torch.ones_like(ids), 200, [], lookup=False)
        (cut,) = greedy_decode(model, ids, torch.ones_like(ids), 200, [], lookup=lookup, cut_loops=True)
    assert len(cut) < 2 * LOOP_TOKENS and cut == free[: len(cut)]
    assert any(
        tuple(free[i : i + LOOP_TOKENS]) == tuple(free[len(cut) : len(cut) + LOOP_TOKENS]) for i in range(len(cut))
    )
