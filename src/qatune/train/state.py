"""The training stage's saved state as typed records: the progress a checkpoint holds (RUN/checkpoints/*/state.json)
and the summary a finished training writes (RUN/train/summary.json), which the report, the run's time estimate
and the model card read. Each record keeps its file's JSON keys in their order; a new key is one field."""

from __future__ import annotations

import types
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from qatune.storage import read_json

_Record = TypeVar("_Record")
_MISSING = object()
KEY = "json_key"  # a field's key in the file when it differs from the field's name


@dataclass
class EpochResult:
    """What validation measured at the end of one epoch."""

    run: int  # the epoch count of an independent run; 0 in one-pass mode (as metrics.jsonl writes it)
    epoch: int
    train_loss: float
    eval_loss: float | None
    unseen_loss: float | None = None
    recall_rouge: float | None = None


@dataclass
class TrainProgress:
    """Where a training stands, saved in every checkpoint and continued from on resume."""

    input_hash: str = ""
    sweep_position: int = field(default=0, metadata={KEY: "run_index"})  # the sweep's run being trained (from 0)
    epoch: int = 1  # the epoch being trained
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    train_examples: int = 0
    train_tokens: int = 0
    answer_tokens: int = 0
    epoch_loss_sum: float = 0.0  # answer-token-weighted loss of the epoch so far
    epoch_targets: int = 0
    history: list[EpochResult] = field(default_factory=list)
    saved: list[int] = field(default_factory=list)  # epoch counts saved as RUN/models/epoch-N
    best_epoch: int | None = None
    best_loss: float | None = None
    best_rouge: float | None = None
    bad_epochs: int = 0  # epochs since validation loss last fell (early stopping)
    stopped_early: bool = False

    def next_run(self) -> None:
        """An independent sweep's next run starts at epoch 1; what earlier runs measured and saved is kept."""
        self.sweep_position += 1
        self.epoch, self.step_in_epoch, self.bad_epochs, self.stopped_early = 1, 0, 0, False

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch, self.epoch_loss_sum, self.epoch_targets = 0, 0.0, 0

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, raw: Any) -> TrainProgress:
        return from_json(cls, raw)


@dataclass
class LoraSummary:
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    target_modules: list[str] = field(default_factory=list)
    trainable_params: int | None = None


@dataclass
class TrainSummary:
    """RUN/train/summary.json. Read back, a key that is missing or holds a value of another type is unset."""

    train_seconds: float | None = None  # the optimisation loop only
    eval_seconds: float | None = None  # validation at epoch ends (loss and recall answers)
    epochs_run: int | None = None
    epochs_requested: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)  # saved as RUN/models/epoch-N
    epochs_not_reached: list[int] = field(default_factory=list)
    stopped_early: bool | None = None
    steps: int | None = None
    train_examples: int | None = None
    train_tokens: int | None = None
    answer_tokens: int | None = None
    tokens_per_second: float | None = None
    examples_per_second: float | None = None
    peak_memory_bytes: int | None = None
    device: str | None = None
    precision: str | None = None
    quantization: str | None = None
    placement_reason: str | None = None
    sweep: str | None = None
    best_epoch: int | None = None
    best_eval_loss: float | None = None
    best_recall_rougeL: float | None = None
    selected_by: str | None = None  # why `best` is the epoch it is
    recall_rougeL_by_epoch: dict[str, float] = field(default_factory=dict)
    unseen_loss_by_epoch: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    grounded: bool | None = None
    rag_k: int | None = None
    oracle_share: float | None = None
    refusal: str | None = None  # what the models learn to say when the data does not answer
    refusal_questions: int | None = None
    answer_leads: int | None = None  # closed-book examples trained answer leads within this many tokens (long answers)
    eval_loss_by_epoch: dict[str, float | None] = field(default_factory=dict)
    train_loss_by_epoch: dict[str, float] = field(default_factory=dict)
    batch_size: int | None = None
    grad_accum: int | None = None
    world_size: int | None = None
    packing: bool | None = None
    shared_prefix_tokens: int | None = None
    train_pairs: int | None = None
    val_pairs: int | None = None
    val_unseen_pairs: int | None = None
    model: str | None = None
    model_path: str | None = None
    lora: LoraSummary | None = None
    input_hash: str | None = None
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, raw: Any) -> TrainSummary:
        """`best_reason`, an earlier name of `selected_by`, is read as it."""
        summary = from_json(cls, raw)
        legacy = raw.get("best_reason") if isinstance(raw, dict) else None
        if legacy and isinstance(legacy, str):
            summary.selected_by = legacy
        return summary


def read_summary(path: Path) -> TrainSummary | None:
    """The summary in `path`; None when it is missing or not a JSON object."""
    try:
        raw = read_json(path)
    except (OSError, ValueError):
        return None
    return TrainSummary.from_json(raw) if isinstance(raw, dict) else None


def to_json(record: Any) -> dict[str, Any]:
    values = asdict(record)
    return {f.metadata.get(KEY, f.name): values[f.name] for f in fields(record)}


def from_json(cls: type[_Record], raw: Any) -> _Record:
    """A record from parsed JSON, field by field: keys of other versions are ignored, and a missing key or a
    value of another type leaves the field's default (lists and maps keep the items that fit)."""
    hints = get_type_hints(cls)
    found = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = f.metadata.get(KEY, f.name)
        if isinstance(raw, dict) and key in raw:
            value = _typed(hints[f.name], raw[key])
            if value is not _MISSING:
                found[f.name] = value
    return cls(**found)


def _typed(kind: Any, value: Any) -> Any:
    """`value` as `kind` (a field's type), or _MISSING when it is not one."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None:
            return None if type(None) in args else _MISSING
        return next((v for v in (_typed(a, value) for a in args) if v is not _MISSING), _MISSING)
    if origin is list:
        if not isinstance(value, list):
            return _MISSING
        return [v for v in (_typed(args[0], v) for v in value) if v is not _MISSING]
    if origin is dict:
        if not isinstance(value, dict):
            return _MISSING
        return {str(k): v for k, v in ((k, _typed(args[1], v)) for k, v in value.items()) if v is not _MISSING}
    if is_dataclass(kind):
        try:
            return from_json(kind, value) if isinstance(value, dict) else _MISSING  # type: ignore[arg-type]
        except TypeError:  # a required field is missing
            return _MISSING
    if isinstance(value, bool) and kind is not bool:
        return _MISSING  # JSON true is not a number
    if kind is float:
        return value if isinstance(value, int | float) else _MISSING
    return value if isinstance(value, kind) else _MISSING
