"""How closely another runtime's greedy answers follow qatune's: where two answers first part, and how close the
model's two best next tokens are there (a near-tie that rounding in f16 or 8-bit weights can flip)."""

from __future__ import annotations

from typing import Any


def first_gap(engine: Any, name: str, messages: list[dict], ours: str, theirs: str) -> tuple[int, float]:
    """(index of the first differing answer token, the engine's top-2 logit gap at that token)."""
    import torch

    from qatune.prompts import prompt_ids

    tokenizer = engine.tokenizer
    want = tokenizer.encode(ours, add_special_tokens=False)
    got = tokenizer.encode(theirs, add_special_tokens=False)
    first = next((j for j, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    prompt = prompt_ids(tokenizer, engine.grounded(name, [messages])[0])
    with engine.use(name) as model, torch.inference_mode():
        logits = model(torch.tensor([prompt + want[:first]], device=engine.device)).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return first, float(top[0] - top[1])
