"""The run's remaining time from counts and rates: the rates remembered per machine in $QATUNE_HOME/rates.json (or
conservative built-in ones), blended with what the running stage measures; the kind of object a stage describes
its work left with (each stage's own counts, priced by these rates); and the wording of the run line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from qatune.storage import atomic_write_json, qatune_home, read_json

if TYPE_CHECKING:
    from qatune.rundir import RunDir

RATES_FILE = "rates.json"
PRIOR_S = 10.0  # a remembered rate weighs as much as this many seconds of the running stage's own measurement
REFERENCE_PARAMS = 135e6  # the built-in rates are for a model of this size on 2 CPU cores
CHARS_PER_TOKEN = 4.0  # English in small chat models' vocabularies (stages count characters; token_scale corrects)


def answer_tokens(text: str) -> float:
    """An answer's tokens, estimated from its characters, and its end-of-turn token."""
    return len(text) / CHARS_PER_TOKEN + 1


@dataclass(frozen=True)
class Rates:
    """Costs on this machine for one model, device, precision and eval engine. The defaults are conservative
    figures for the default model on 2 CPU cores without native bf16."""

    train_tokens_per_s: float = 250.0
    train_answer_share: float = 0.25  # the share of answer tokens in the training train_tokens_per_s was measured on
    answer_token_cost: float = 1.4  # an answer token's output layer and loss, in passes of a token (built in)
    train_setup_s: float = 20.0  # model load, tokenization, grounded examples
    recall_s_per_answer: float = 0.5  # validation at a saved epoch, per recall question
    recall_answer_tokens: float = 20.0  # recall questions' mean reference length where recall_s_per_answer was measured
    token_scale: float = 1.0  # a pass's real tokens / their estimate from characters
    eval_s_per_token: float = 0.01  # an eval set's seconds per generated token (loading and scoring included)
    base_fill: float = 1.0  # base answer length / max_new_tokens (the base model seldom stops by itself)
    base_tokens: float = 0.0  # the base model's mean answer in new tokens, where measured (0: use base_fill)
    rag_fill: float = 1.0  # the same for the grounded base model
    tuned_ratio: float = 1.5  # fine-tuned answer length / reference answer length
    rag_tuned_ratio: float = 1.0  # the same for grounded fine-tuned answers (they stop early when they copy)
    unasked_share: float = 0.0  # grounded answers to questions the data does not answer given before any pass
    choose_train_ratio: float = 1.1  # a chosen answer's prompt token / a trained token, in time (its pairs once)
    report_s: float = 5.0


def default_rates(params: int | None, cuda: bool) -> Rates:
    """Built-in rates scaled by model size: time grows with the parameter count on CPU and with its square root
    on CUDA, which is also taken to be 20x faster at training and 10x at decoding."""
    size = max(float(params or 5e8), 1.0) / REFERENCE_PARAMS
    train, decode = (math.sqrt(size) / 20, math.sqrt(size) / 10) if cuda else (size, size)
    base = Rates()
    return replace(
        base,
        train_tokens_per_s=base.train_tokens_per_s / train,
        train_setup_s=base.train_setup_s * max(1.0, math.sqrt(size)),
        recall_s_per_answer=base.recall_s_per_answer * decode,
        eval_s_per_token=base.eval_s_per_token * decode,
    )


def rates_path() -> Path:
    return qatune_home() / RATES_FILE


def _remembered() -> dict:
    try:
        data = read_json(rates_path())
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) and isinstance(data.get("rates"), dict) else {"rates": {}}


def load_rates(key: str, defaults: Rates) -> tuple[Rates, bool]:
    """The rates remembered under `key` over `defaults` (positive numbers only); True when any was remembered."""
    saved = _remembered()["rates"].get(key)
    names = {f.name for f in fields(Rates)}
    good = {
        k: float(v)
        for k, v in (saved.items() if isinstance(saved, dict) else [])
        if k in names and isinstance(v, int | float) and math.isfinite(v) and v > 0
    }
    return replace(defaults, **good), bool(good)


def save_rates(key: str, rates: Rates) -> None:
    data = _remembered()  # a corrupt file is replaced
    data["rates"][key] = asdict(rates)
    try:
        atomic_write_json(rates_path(), data)
    except OSError:
        pass  # a read-only home only loses the memory


def blend(prior: float, seconds: float, units: float) -> float:
    """Seconds per unit: the prior rate, weighted as PRIOR_S seconds of measurement, averaged with the rate
    measured over `seconds`, so the measurement takes over as the stage goes on, whichever way the prior erred."""
    if units <= 0:
        return prior
    return (PRIOR_S * prior + seconds * (seconds / units)) / (PRIOR_S + seconds)


@dataclass
class Measured:
    """What the running stage reported: training tokens and step seconds, or answers and new tokens per model."""

    epoch_tokens: int | None = None  # exact once the training loop starts
    tokens: int = 0
    seconds: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    new_tokens: dict[str, int] = field(default_factory=dict)
    chosen: int = 0  # answers of choosing batches (generate.select) that ran the model (prompt passes, no tokens)
    chosen_seconds: float = 0.0
    unasked: dict[str, int] = field(default_factory=dict)  # answers the guard gave before any model pass


class Work:
    """What a stage has left (train.work_left, evaluate.work_left, REPORT), priced by this machine's rates."""

    def seconds(self, rates: Rates) -> float:
        """The whole stage, before it starts."""
        return self.left(rates, Measured(), 0.0)

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        raise NotImplementedError

    def learned(self, rates: Rates, m: Measured, seconds: float, rundir: RunDir) -> Rates:
        """`rates` updated by what the stage measured, once it has finished in `seconds` (and written its files)."""
        return rates


@dataclass(frozen=True)
class ReportWork(Work):
    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        return max(0.0, rates.report_s - elapsed)

    def learned(self, rates: Rates, m: Measured, seconds: float, rundir: RunDir) -> Rates:
        return replace(rates, report_s=max(seconds, 0.1))


REPORT = ReportWork()


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def about(seconds: float) -> str:
    """A rounded duration: no more precision than an estimate has."""
    if seconds < 5:
        return "a few seconds"
    step = 5 if seconds < 60 else 10 if seconds < 600 else 60
    return "about " + duration(step * round(seconds / step))


def run_line(status: str, elapsed: float, left: float) -> str:
    return f"run: {status} · {duration(elapsed)} elapsed · {about(left)} left for the whole run"
