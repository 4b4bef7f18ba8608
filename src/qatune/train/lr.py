"""The learning rate `--lr auto` resolves to for a base model of a given size."""

from __future__ import annotations

AUTO_LR = 2e-3  # measured for SmolLM2-135M with the two-epoch sweep (docs/training.md, "Knowledge recipe")
AUTO_LR_PARAMS = 150e6


def resolve_lr(lr: float | str, base_parameters: int) -> float:
    """`auto`: AUTO_LR for small models; larger ones get a smaller rate, by the square root of the size."""
    if lr != "auto":
        return float(lr)
    return AUTO_LR * min(1.0, (AUTO_LR_PARAMS / max(base_parameters, 1)) ** 0.5)
