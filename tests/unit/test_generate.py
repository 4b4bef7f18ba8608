"""Batched generation: same answers as one at a time, only new tokens decoded, adapters switch per call."""

from __future__ import annotations

import threading

import pytest
import torch

from qatune.generate import BASE, Engine
from qatune.generate.streaming import cut_at_stop
from qatune.models.load import load_base, load_tokenizer
from qatune.models.lora import attach_lora, lora_config
from qatune.models.placement import choose_placement
from qatune.prompts import messages_for

QUESTIONS = ["Who is the instructor?", "How is the grade computed?", "What is the title of this course?", "When?"]


def _engine(model_dir, with_adapter: bool = False) -> Engine:
    tok = load_tokenizer(str(model_dir))
    model = load_base(str(model_dir), choose_placement())
    names = []
    if with_adapter:
        model = attach_lora(model, lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        names = ["default"]
    return Engine(model, tok, names, "cpu")


def test_batched_greedy_equals_one_at_a_time(lively_model_dir):
    engine = _engine(lively_model_dir)
    convs = [messages_for(q) for q in QUESTIONS]
    batched = engine.generate(BASE, convs, max_new_tokens=12, batch_size=4)
    single = [engine.generate(BASE, [c], max_new_tokens=12, batch_size=1)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in single]
    assert len({g.text for g in batched}) > 1, "the answers must depend on the question"
    assert all(g.new_tokens <= 12 for g in batched)


def test_answer_never_contains_the_prompt(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    gen = engine.generate(BASE, [messages_for("Who is the instructor?")], max_new_tokens=8)[0]
    assert "<|im_start|>" not in gen.text and "Who is the instructor?" not in gen.text


def test_adapter_changes_output_and_base_is_restored(tiny_model_dir):
    engine = _engine(tiny_model_dir, with_adapter=True)
    plain = _engine(tiny_model_dir)
    convs = [messages_for(q) for q in QUESTIONS]
    base_answers = [g.text for g in engine.generate(BASE, convs, max_new_tokens=10)]
    tuned = [g.text for g in engine.generate("default", convs, max_new_tokens=10)]
    assert base_answers == [g.text for g in plain.generate(BASE, convs, max_new_tokens=10)]
    assert tuned != base_answers
    nll_base = engine.answer_nll(BASE, [(q, "Professor Ada.") for q in QUESTIONS])
    nll_tuned = engine.answer_nll("default", [(q, "Professor Ada.") for q in QUESTIONS])
    assert all(v is not None and v > 0 for v in nll_base) and nll_base != nll_tuned


def test_stream_matches_generate_and_cancel_stops(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    msgs = messages_for("How is the grade computed?")
    whole = engine.generate(BASE, [msgs], max_new_tokens=16)[0].text
    assert "".join(engine.stream(BASE, msgs, max_new_tokens=16)).strip() == whole
    cancel = threading.Event()
    pieces = []
    for piece in engine.stream(BASE, msgs, max_new_tokens=200, cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert len(pieces) == 1
    assert engine.lock.acquire(timeout=5)
    engine.lock.release()


def test_unknown_model_is_a_clear_error(tiny_model_dir):
    from qatune.console import QatuneError

    engine = _engine(tiny_model_dir)
    with pytest.raises(QatuneError, match="unknown model 'epoch-9'"):
        engine.generate("epoch-9", [messages_for("x")])


def test_stop_strings_cut_the_text():
    assert cut_at_stop("Paris. Question: next", ["Question:"]) == ("Paris. ", True)
    assert cut_at_stop("Paris.", ["zzz"]) == ("Paris.", False)


def test_pruned_greedy_decoding_equals_hf_generate(lively_model_dir):
    """Rows that finish early leave the batch; every row still gets exactly HF generate's greedy tokens."""
    from qatune.generate.decoding import greedy_decode
    from qatune.prompts import prompt_ids

    engine = _engine(lively_model_dir)
    tok, model = engine.tokenizer, engine.model
    batch = tok.pad({"input_ids": [prompt_ids(tok, messages_for(q)) for q in QUESTIONS]}, return_tensors="pt")
    free = model.generate(
        **batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None
    )[:, batch["input_ids"].shape[1] :]
    stop = [int(free[0, 2])]  # row 0 stops at step 3 at the latest; other rows may run on
    expected = model.generate(
        **batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stop
    )[:, batch["input_ids"].shape[1] :].tolist()
    got = greedy_decode(model, batch["input_ids"], batch["attention_mask"], 12, stop)
    for row, tokens in zip(expected, got, strict=True):
        end = next((i for i, t in enumerate(row) if t in stop), len(row) - 1)
        assert tokens == row[: end + 1]
    assert len(got[0]) <= 3 and max(len(t) for t in got) > len(got[0])


def test_answer_nll_equals_the_plain_full_logits_loss_row_by_row(tiny_model_dir):
    """Batched by length with the output layer only at answer positions, the answer NLL is the mean
    cross-entropy a plain forward gives each row alone, with the adapter on and off."""
    from qatune.prompts import IGNORE_INDEX, encode_pair

    engine = _engine(tiny_model_dir, with_adapter=True)
    answers = ["Ada.", "Two exams and a project, weighted 40/60.", "ML", "Mondays"]
    pairs = list(zip(QUESTIONS, answers, strict=True))
    for name in (BASE, "default"):
        got = engine.answer_nll(name, pairs, batch_tokens=64)  # several batches of different widths
        with engine.use(name) as model, torch.no_grad():
            for (q, a), value in zip(pairs, got, strict=True):
                e = encode_pair(engine.tokenizer, q, a, 1024)
                logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].float()
                target = torch.tensor(e.labels[1:])
                keep = target != IGNORE_INDEX
                expected = torch.nn.functional.cross_entropy(logits[keep], target[keep]).item()
                assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("reply_tokens", [4096, 12])
def test_generate_with_references_scores_them_as_answer_nll_does(lively_model_dir, monkeypatch, reply_tokens):
    """The reference NLL that eval reads off the generation's own prompt pass (left-padded rows of different
    lengths, answers of different lengths) equals answer_nll's, with the adapter on and off, and leaves the
    greedy answers as they are without references; the same when the references are scored a few rows at a
    time (12 tokens: rows of the prompt cache picked per batch, and the answers decoded from it unchanged)."""
    monkeypatch.setattr("qatune.generate.nll.REPLY_TOKENS", reply_tokens)
    engine = _engine(lively_model_dir, with_adapter=True)
    answers = ["Ada.", "Two exams and a project, weighted 40/60.", "ML", "Mondays"]
    convs = [messages_for(q) for q in QUESTIONS]
    for name in (BASE, "default"):
        plain = engine.generate(name, convs, max_new_tokens=10, batch_size=3)
        scored = engine.generate(name, convs, max_new_tokens=10, batch_size=3, references=answers)
        assert [g.text for g in scored] == [g.text for g in plain]
        assert all(g.reference_nll is None for g in plain)
        expected = engine.answer_nll(name, list(zip(QUESTIONS, answers, strict=True)))
        assert [g.reference_nll for g in scored] == pytest.approx(expected, rel=1e-4)
        assert len(set(expected)) == len(expected)


def test_a_bf16_engine_answers_with_its_adapters_in_bf16(tmp_path, lively_model_dir):
    """Answering in bf16 holds the adapters in bf16 too, so no LoRA layer casts its input to fp32 and back at
    every call; an fp32 engine keeps them in fp32 (its answers are unchanged)."""
    from adapter_runs import make_run
    from qatune.config import load_for_run
    from qatune.generate import load_engine

    run = make_run(tmp_path / "run", lively_model_dir)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        config = load_for_run(run, None, {"train": {"precision": precision}}, save=False)
        engine = load_engine(run, config, names=["epoch-1"])
        assert {p.dtype for n, p in engine.model.named_parameters() if "lora_" in n} == {dtype}
        assert {p.dtype for n, p in engine.model.named_parameters() if "lora_" not in n} == {dtype}
        answers = engine.generate("epoch-1", [messages_for(q) for q in QUESTIONS], max_new_tokens=6)
        assert all(a.new_tokens > 0 for a in answers)
