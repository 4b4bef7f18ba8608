"""Decoding parity on the real default model. In fp32 the engine's batched greedy decoding (left padding,
finished rows leaving the batch, n-gram lookup drafts verified in one pass) gives, token for token, what HF
`generate` gives for each prompt on its own. In bf16 (tested where the CPU has it natively, where qatune uses
it) rounding depends on the shape of a pass: one-token passes still equal HF `generate` over the same batch
token for token, and a multi-token draft check or the one-row pass over the prompts' shared start may flip only
a near-tie."""

from __future__ import annotations

import pytest
import torch

from example_runs import example_pairs
from greedy_reference import hf_greedy
from qatune.generate import BASE, Engine
from qatune.generate import decoding as decoding_mod
from qatune.models.load import load_base, load_tokenizer
from qatune.models.placement import choose_placement, cpu_has_native_bf16
from qatune.models.resolve import resolve_model
from qatune.prompts import messages_for, prompt_ids, stop_token_ids

pytestmark = pytest.mark.slow
TOKENS = 40
ROWS = 6


def _setup(precision: str):
    path = resolve_model("default")
    model = load_base(path, choose_placement("none", precision))
    tokenizer = load_tokenizer(path)
    engine = Engine(model, tokenizer, [], "cpu")  # also sets left padding
    # questions of different lengths, so the batch carries left padding and rows finish at different steps
    questions = [p["question"] for p in example_pairs(40)[::7]][:ROWS]
    prompts = [prompt_ids(tokenizer, messages_for(q)) for q in questions]
    assert len({len(p) for p in prompts}) > 1
    return engine, model, tokenizer, stop_token_ids(tokenizer), questions, prompts


def test_batched_drafted_decoding_equals_hf_generate_in_fp32(monkeypatch):
    engine, model, tokenizer, stops, questions, prompts = _setup("fp32")

    drafted: list[int] = []
    real_draft = decoding_mod.lookup_draft

    def counting_draft(context, limit):
        draft = real_draft(context, limit)
        drafted.append(len(draft))
        return draft

    monkeypatch.setattr(decoding_mod, "lookup_draft", counting_draft)
    with torch.inference_mode():
        expected = [hf_greedy(model, tokenizer.pad_token_id, p, TOKENS, stops) for p in prompts]
        batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        got = decoding_mod.greedy_decode(model, batch["input_ids"], batch["attention_mask"], TOKENS, stops)
        alone = [
            decoding_mod.greedy_decode(
                model, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long), TOKENS, stops
            )[0]
            for p in prompts[:3]  # a row alone is drafted from its second token on
        ]
    for row, (tokens, reference) in enumerate(zip(got, expected, strict=True)):
        assert tokens == reference, questions[row]
    assert alone == expected[:3]
    assert sum(drafted) > 0, "some rows must have been decoded with drafts"
    assert len({len(t) for t in got}) > 1, "rows must finish at different steps"

    answers = engine.generate(BASE, [messages_for(q) for q in questions], max_new_tokens=TOKENS, batch_size=ROWS)
    for answer, reference in zip(answers, expected, strict=True):
        kept = [t for t in reference if t not in stops]
        assert answer.text == tokenizer.decode(kept, skip_special_tokens=True).strip()
        assert answer.stopped == (reference[-1] in stops) and answer.new_tokens == len(reference)


def _until_stop(tokens: list[int], stops: list[int]) -> list[int]:
    end = next((i for i, t in enumerate(tokens) if t in stops), None)
    return tokens if end is None else tokens[: end + 1]


def _first_flip_gap(model, prompt: list[int], tokens: list[int], reference: list[int]) -> float:
    """0 when `tokens` equal `reference`; else the logit gap between the two tokens where they first differ."""
    k = next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), None)
    if k is None:
        assert len(tokens) == len(reference)
        return 0.0
    logits = model(input_ids=torch.tensor([prompt + reference[:k]])).logits[0, -1].float()
    return abs(float(logits[reference[k]] - logits[tokens[k]]))


@pytest.mark.skipif(
    not cpu_has_native_bf16(),
    reason="this CPU has no native bf16 (AVX512-BF16 or AMX): qatune keeps the model in fp32 here",
)
def test_bf16_decoding_equals_hf_generate_for_the_same_passes_and_drafts_flip_only_near_ties(monkeypatch):
    engine, model, tokenizer, stops, questions, prompts = _setup("bf16")
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=TOKENS,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
        hf_batch = [_until_stop(row, stops) for row in out[:, ids.shape[1] :].tolist()]
        # finished rows leaving the batch and its cache change nothing: HF's one-token passes, token for token
        # (with the prompts' shared start computed per row, as HF does)
        with monkeypatch.context() as m:
            m.setattr(decoding_mod, "MIN_SHARED_PREFIX", 10**9)
            assert decoding_mod.greedy_decode(model, ids, mask, TOKENS, stops, lookup=False) == hf_batch
        drafted = decoding_mod.greedy_decode(model, ids, mask, TOKENS, stops)
        gaps = [_first_flip_gap(model, p, d, r) for p, d, r in zip(prompts, drafted, hf_batch, strict=True)]
        for prompt in prompts[:3]:  # alone, a row is drafted from its second token on
            one = torch.tensor([prompt])
            (alone,) = decoding_mod.greedy_decode(model, one, torch.ones_like(one), TOKENS, stops)
            gaps.append(
                _first_flip_gap(model, prompt, alone, hf_greedy(model, tokenizer.pad_token_id, prompt, TOKENS, stops))
            )
    assert max(gaps) < 1.0, f"a draft check changed a token that was not a near-tie (logit gaps {gaps})"
