"""Recall of trained facts during training: greedy answers to held-out rewordings of training questions,
scored by ROUGE-L against the trained answer. It picks `best`, because the loss on pairs whose facts were
never trained measures wording, not what the model knows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RECALL_KINDS = ("paraphrase", "generated")


def is_recall(row: dict) -> bool:
    """A validation row that rewords a trained question (the rest are pairs whose facts were never trained)."""
    return row.get("kind") in RECALL_KINDS


def recall_scorer(
    model: Any, tokenizer: Any, rows: list[dict], device: str, autocast: Any
) -> Callable[[], float | None]:
    """A function that answers `rows` with the model as it is now and returns the mean ROUGE-L F1."""
    if not rows:
        return lambda: None
    from qatune.prompts import messages_for, prompt_ids, stop_token_ids

    prompts = [prompt_ids(tokenizer, messages_for(r["question"])) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    stops = stop_token_ids(tokenizer)
    longest = max(len(tokenizer.encode(r["answer"], add_special_tokens=False)) for r in rows)
    budget = min(256, 2 * longest + 8)  # a rambling answer is cut; it scores low either way

    def score() -> float:
        import torch

        from qatune.evaluate.metrics import rouge
        from qatune.generate.decoding import greedy_decode

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
        was_training = model.training
        model.eval()
        total = 0.0
        try:
            with torch.no_grad(), autocast():
                for start in range(0, len(order), 32):
                    idx = order[start : start + 32]
                    width = max(len(prompts[i]) for i in idx)
                    ids = torch.full((len(idx), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, i in enumerate(idx):  # left padding
                        ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                        mask[row, width - len(prompts[i]) :] = 1
                    new = greedy_decode(model, ids.to(device), mask.to(device), budget, stops, cut_loops=True)
                    for i, tokens in zip(idx, new, strict=True):
                        kept = [t for t in tokens if t not in stops]
                        text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                        total += rouge(text, rows[i]["answer"])["rougeL"]
        finally:
            model.train(was_training)
        return total / len(rows)

    return score
