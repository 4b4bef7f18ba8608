"""The reference every decoding test compares with: HF `generate`'s greedy tokens for one prompt on its own
(no padding, no batch), ending with the stop token where one was met."""

from __future__ import annotations

from typing import Any


def hf_greedy(model: Any, pad_id: int, prompt: list[int], max_new_tokens: int, stops: list[int] | None) -> list[int]:
    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=stops or None,
        )
    return out[0, ids.shape[1] :].tolist()
