"""The report's training section from train/summary.json: labelled rows with units (device, time, speed,
memory, epochs, the best epoch and why it was chosen), validation loss by epoch, and the raw JSON."""

from __future__ import annotations

import json
from typing import Any

from qatune.report.load import number
from qatune.train.state import LoraSummary, TrainSummary

DEFAULT_BEST_REASON = "lowest validation loss"


def raw_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, ensure_ascii=False, default=str)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {sec} s" if minutes else f"{seconds:.1f} s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _count(value: Any, unit: str = "", digits: int = 0) -> str | None:
    num = number(value)
    return None if num is None else f"{num:,.{digits}f} {unit}".strip()


def summary_rows(s: TrainSummary) -> list[tuple[str, str]]:
    """The training summary for people: labelled, with units; every raw key stays in the JSON block below it."""
    precision = None
    if s.precision is not None:
        quant = s.quantization
        precision = s.precision + (f", base weights {quant}" if quant not in (None, "none") else "")
    seconds, validating = number(s.train_seconds), number(s.eval_seconds)
    time = None
    if seconds is not None:
        time = _duration(seconds) + (f" (of which {_duration(validating)} validating)" if validating else "")
    memory, peak = None, number(s.peak_memory_bytes)
    if peak is not None:
        where = "GPU memory allocated" if str(s.device or "").startswith("cuda") else "process resident memory"
        memory = f"{_size(peak)} ({where})"
    rows = [
        ("Device", s.device),
        ("Precision", precision),
        ("Placement", s.placement_reason or None),
        ("Training time", time),
        ("Examples per second", _count(s.examples_per_second, "examples/s", digits=2)),
        ("Tokens per second", _count(s.tokens_per_second, "tokens/s")),
        ("Peak memory", memory),
        ("Epochs run / requested", _epochs_text(s)),
        ("Saved models", ", ".join(f"epoch-{_text(e)}" for e in s.epochs) or None),
        ("Best epoch", _best_text(s)),
        ("Training data", _data_text(s)),
        ("Batch", _batch_text(s)),
        ("LoRA", _lora_text(s.lora)),
    ]
    return [(label, value) for label, value in rows if value]


def _epochs_text(s: TrainSummary) -> str | None:
    """Independent sweeps train every requested count from scratch, so their epochs add up."""
    run = number(s.epochs_run)
    requested = [e for e in map(number, s.epochs_requested or s.epochs) if e is not None]
    if run is None:
        return None
    total = sum(requested) if s.sweep == "independent" else max(requested, default=None)
    text = f"{run:.0f} of {total:.0f}" if total else f"{run:.0f}"
    if s.stopped_early:
        text += ", stopped early"
    if s.epochs_not_reached:
        text += f" (not reached: {_text(s.epochs_not_reached)})"
    return text + (f"; sweep {s.sweep}" if s.sweep else "")


def _best_text(s: TrainSummary) -> str | None:
    if s.best_epoch is None:
        return None
    reason = s.selected_by or DEFAULT_BEST_REASON
    loss = number(s.best_eval_loss)
    shown = f" ({loss:.4f})" if loss is not None and reason == DEFAULT_BEST_REASON else ""
    return f"epoch {s.best_epoch}, chosen by {reason}{shown}"


def _data_text(s: TrainSummary) -> str | None:
    parts = []
    if s.train_pairs is not None:
        val = f", {_count(s.val_pairs)} validation" if s.val_pairs is not None else ""
        parts.append(f"{_count(s.train_pairs)} training pairs{val}")
    if s.train_examples is not None:
        parts.append(f"{_count(s.train_examples)} examples seen")
    if s.train_tokens is not None:
        answer = f" ({_count(s.answer_tokens)} answer tokens carry the loss)" if s.answer_tokens else ""
        parts.append(f"{_count(s.train_tokens)} tokens{answer}")
    if s.answer_leads:
        parts.append(
            f"closed-book examples trained each answer's lead (to a sentence end within {s.answer_leads} tokens): "
            "long answers"
        )
    return "; ".join(parts) or None


def _batch_text(s: TrainSummary) -> str | None:
    if s.batch_size is None:
        return None
    text = f"{_count(s.batch_size)} examples"
    if (s.grad_accum or 1) > 1:
        text += f" x {_count(s.grad_accum)} accumulation steps"
    if (s.world_size or 1) > 1:
        text += f" x {_count(s.world_size)} processes"
    if s.packing:
        text += ", packed rows"
    prefix = s.shared_prefix_tokens
    return text + (f", shared prompt prefix {prefix:.0f} tokens" if prefix else "")


def _lora_text(lora: LoraSummary | None) -> str | None:
    if lora is None or lora.r is None:
        return None
    text = f"rank {lora.r}, alpha {_text(lora.alpha)}, dropout {_text(lora.dropout)}"
    if lora.target_modules:
        text += f", on {_text(lora.target_modules)}"
    trainable = _count(lora.trainable_params)
    return text + (f"; {trainable} trainable parameters" if trainable else "")


def val_losses(summary: TrainSummary) -> list[dict[str, Any]]:
    points: list[tuple[int, float]] = []
    for key, value in summary.eval_loss_by_epoch.items():
        loss = number(value)
        if key.isdigit() and loss is not None:
            points.append((int(key), loss))
    points.sort()
    low = min((v for _, v in points), default=None)
    return [{"epoch": e, "loss": f"{v:.4f}", "best": v == low} for e, v in points]
