"""Batched generation: same answers as one at a time, only new tokens decoded, adapters switch per call."""

from __future__ import annotations

import threading

import pytest
import torch

from qatune.generate import BASE, Engine, _cut_at_stop
from qatune.model import attach_lora, choose_placement, load_base, load_tokenizer, lora_config
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


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    convs = [messages_for(q) for q in QUESTIONS]
    batched = engine.generate(BASE, convs, max_new_tokens=12, batch_size=4)
    single = [engine.generate(BASE, [c], max_new_tokens=12, batch_size=1)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in single]
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
    assert _cut_at_stop("Paris. Question: next", ["Question:"]) == ("Paris. ", True)
    assert _cut_at_stop("Paris.", ["zzz"]) == ("Paris.", False)
