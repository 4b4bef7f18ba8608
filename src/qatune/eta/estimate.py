"""The run's remaining time as pure functions of counts and rates: the work types of the stages, the rates
remembered per machine in $QATUNE_HOME/rates.json (or conservative built-in ones), what a finished stage's
measurements change in them, and the wording of the run line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from qatune.generate.engine import BASE
from qatune.rag import closed_book, grounded_name, is_grounded
from qatune.storage import atomic_write_json, qatune_home, read_json

if TYPE_CHECKING:
    from qatune.train.state import TrainSummary

RATES_FILE = "rates.json"
PRIOR_S = 10.0  # a remembered rate weighs as much as this many seconds of the running stage's own measurement
REFERENCE_PARAMS = 135e6  # the built-in rates are for a model of this size on 2 CPU cores


@dataclass(frozen=True)
class Rates:
    """Costs on this machine for one model, device, precision and eval engine. The defaults are conservative
    figures for the default model on 2 CPU cores without native bf16."""

    train_tokens_per_s: float = 250.0
    train_setup_s: float = 20.0  # model load, tokenization, grounded examples
    recall_s_per_answer: float = 0.5  # validation at a saved epoch, per recall question
    token_scale: float = 1.0  # a pass's real tokens / their estimate from characters
    eval_s_per_token: float = 0.01  # an eval set's seconds per generated token (loading and scoring included)
    base_fill: float = 1.0  # base answer length / max_new_tokens (the base model seldom stops by itself)
    rag_fill: float = 1.0  # the same for the grounded base model
    tuned_ratio: float = 1.5  # fine-tuned answer length / reference answer length
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


def load_rates(key: str, defaults: Rates) -> tuple[Rates, bool]:
    """The rates remembered under `key` over `defaults`; True when any was remembered."""
    try:
        saved = read_json(rates_path())["rates"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return defaults, False
    names = {f.name for f in fields(Rates)}
    good = {
        k: float(v)
        for k, v in (saved.items() if isinstance(saved, dict) else [])
        if k in names and isinstance(v, int | float) and math.isfinite(v) and v > 0
    }
    return replace(defaults, **good), bool(good)


def save_rates(key: str, rates: Rates) -> None:
    path = rates_path()
    try:
        data = read_json(path)
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("rates"), dict):
        data = {"rates": {}}
    data["rates"][key] = asdict(rates)
    try:
        atomic_write_json(path, data)
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


@dataclass(frozen=True)
class TrainWork:
    epoch_tokens: float  # tokens in one pass over the training examples, estimated from characters
    epochs: float  # passes still to run: the largest epoch of the sweep (independent: their sum), less resumed
    recall_questions: int  # answered greedily at every saved epoch (they pick `best`)
    saves: int  # saved epochs still to come
    resumed: bool = False

    def seconds(self, rates: Rates) -> float:
        return rates.train_setup_s + self._rest(rates, self.epoch_tokens * rates.token_scale, rates.train_tokens_per_s)

    def _rest(self, rates: Rates, epoch_tokens: float, tokens_per_s: float) -> float:
        recall = self.recall_questions * self.saves * rates.recall_s_per_answer
        return epoch_tokens * self.epochs / tokens_per_s + recall

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        if m.epoch_tokens is None:  # still setting up
            return max(0.0, rates.train_setup_s - elapsed) + self.seconds(rates) - rates.train_setup_s
        per_token = blend(1 / rates.train_tokens_per_s, m.seconds, m.tokens)
        total = m.epoch_tokens * self.epochs
        return max(0.0, 1 - m.tokens / max(total, 1)) * self._rest(rates, m.epoch_tokens, 1 / per_token)


@dataclass(frozen=True)
class EvalWork:
    answers: dict[str, int]  # model -> questions it generates answers for (copies and retrieval are cheap)
    answer_tokens: float  # mean reference answer length, in tokens estimated from characters
    max_new_tokens: int

    def expected(self, model: str, rates: Rates) -> float:
        """New tokens per answer: the base model runs on, a fine-tuned one stops near the reference length."""
        if closed_book(model) == BASE:
            return (rates.rag_fill if is_grounded(model) else rates.base_fill) * self.max_new_tokens
        return min(float(self.max_new_tokens), rates.tuned_ratio * self.answer_tokens)

    def tokens_left(self, rates: Rates, answered: dict[str, int]) -> float:
        return sum(max(0, n - answered.get(m, 0)) * self.expected(m, rates) for m, n in self.answers.items())

    def seconds(self, rates: Rates) -> float:
        return self.tokens_left(rates, {}) * rates.eval_s_per_token

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        return self.tokens_left(rates, m.answers) * blend(rates.eval_s_per_token, elapsed, m.tokens)


@dataclass(frozen=True)
class ReportWork:
    def seconds(self, rates: Rates) -> float:
        return rates.report_s

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        return max(0.0, rates.report_s - elapsed)


Work = TrainWork | EvalWork | ReportWork
REPORT = ReportWork()


def train_rates(rates: Rates, work: TrainWork, m: Measured, summary: TrainSummary | None, seconds: float) -> Rates:
    """What a finished training measured: tokens/s of the loop, the estimate's scale, validation and setup."""
    new: dict[str, float] = {}
    if summary is not None and (summary.tokens_per_second or 0) > 0:
        new["train_tokens_per_s"] = float(summary.tokens_per_second or 0)
    if m.epoch_tokens and work.epoch_tokens > 0:
        new["token_scale"] = m.epoch_tokens / work.epoch_tokens
    saved_recall = work.recall_questions * len(summary.recall_rougeL_by_epoch if summary else {})
    if not work.resumed and summary is not None:
        validation = float(summary.eval_seconds or 0)
        new["train_setup_s"] = max(1.0, seconds - float(summary.train_seconds or 0) - validation)
        if saved_recall and validation > 0:
            new["recall_s_per_answer"] = validation / saved_recall
    return replace(rates, **new)


def eval_rates(rates: Rates, work: EvalWork, m: Measured, seconds: float) -> Rates:
    """What an eval set measured: seconds per generated token and how long each kind of model's answers ran."""
    if m.tokens < 50:
        return rates  # too little generated to measure
    new = {"eval_s_per_token": seconds / m.tokens}
    kinds: dict[str, list[str]] = {"base_fill": [BASE], "rag_fill": [grounded_name(BASE)]}
    kinds["tuned_ratio"] = [k for k in m.answers if closed_book(k) != BASE]
    for name, models in kinds.items():
        answers = sum(m.answers.get(k, 0) for k in models)
        if answers:
            mean = sum(m.new_tokens.get(k, 0) for k in models) / answers
            scale = work.answer_tokens if name == "tuned_ratio" else work.max_new_tokens
            new[name] = max(mean / max(scale, 1e-9), 0.01)
    return replace(rates, **new)


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def about(seconds: float) -> str:
    """A rounded duration: no more precision than an estimate has."""
    if seconds < 5:
        return "a few seconds"
    step = 5 if seconds < 60 else 10 if seconds < 600 else 60
    return "about " + duration(step * round(seconds / step))


def run_line(status: str, elapsed: float, left: float) -> str:
    return f"run: {status} · {duration(elapsed)} elapsed · {about(left)} left for the whole run"
