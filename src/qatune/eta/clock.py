"""The clock of one `qatune run`: the plan of the work left, re-counted at every stage boundary; the run line
printed there and shown live under the stage bars; the hooks through which the running stage reports what it
measures; the rates remembered when a stage finishes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.progress import Progress
from rich.text import Text

from qatune import console
from qatune.console import QatuneError
from qatune.eta.estimate import (
    EvalWork,
    Measured,
    Rates,
    ReportWork,
    TrainWork,
    Work,
    default_rates,
    eval_rates,
    load_rates,
    run_line,
    save_rates,
    train_rates,
)
from qatune.rundir import RunDir
from qatune.train.state import read_summary

if TYPE_CHECKING:
    from qatune.config import Config

REFRESH_S = 2.0  # the live line is recomputed this often


class RunClock:
    """The clock of one `qatune run`, active inside `with`: at every stage boundary it asks `planner` for the
    work left per stage (None: reused, counts 0), prints the run line and remembers the rates of the stage that
    ran; stage bars show its live line and stages report what they measure through this module's functions."""

    def __init__(self, rundir: RunDir, config: Config, model_path: str, planner: Callable[[], dict[str, Work | None]]):
        """`model_path`: the run's model, resolved (what `model.preflight` returns)."""
        self.rundir, self.planner = rundir, planner
        self.key, defaults = _machine(config, model_path)
        self.rates, _ = load_rates(self.key, defaults)
        self.start = self.stage_start = time.monotonic()
        self.plan: dict[str, Work | None] = {}
        self.finished: set[str] = set()
        self.stage: str | None = None
        self.measured = Measured()
        self._shown = (-math.inf, "")

    def __enter__(self) -> RunClock:
        _Active.clock = self
        return self

    def __exit__(self, *exc: object) -> None:
        _Active.clock = None

    def begin(self, stage: str) -> None:
        self.stage, self.stage_start, self.measured = stage, time.monotonic(), Measured()
        self._shown = (-math.inf, "")

    def end(self, stage: str, ran: bool, seconds: float) -> None:
        if ran:
            self._remember(self.plan.get(stage), seconds)
        self.finished.add(stage)
        self.stage = None
        try:
            self.plan = self.planner()
        except (QatuneError, OSError, ValueError):
            pass  # the stage that reads the same files says what is wrong with them
        if any(w is not None and not isinstance(w, ReportWork) for w in self._later().values()):
            status = f"{stage} done" if ran else f"{stage} up to date"
            if not console.is_quiet():  # one line, however narrow the terminal or log
                line = run_line(status, time.monotonic() - self.start, self.left())
                console.console.print(line, markup=False, soft_wrap=True)

    def _later(self) -> dict[str, Work | None]:
        return {s: w for s, w in self.plan.items() if s not in self.finished and s != self.stage}

    def left(self, stage_left: float = 0.0) -> float:
        return stage_left + sum(w.seconds(self.rates) for w in self._later().values() if w is not None)

    def live_line(self) -> str | None:
        """The run line for the running stage, recomputed every REFRESH_S (None before the first plan)."""
        now = time.monotonic()
        if self.stage is None or self.stage not in self.plan:
            return None
        if now - self._shown[0] >= REFRESH_S:
            work, elapsed = self.plan[self.stage], now - self.stage_start
            stage_left = work.left(self.rates, self.measured, elapsed) if work is not None else 0.0
            done = 100 * elapsed / max(elapsed + stage_left, 1e-9)
            self._shown = (now, run_line(f"{self.stage} {done:.0f}%", now - self.start, self.left(stage_left)))
        return self._shown[1]

    def _remember(self, work: Work | None, seconds: float) -> None:
        if isinstance(work, TrainWork):
            rates = train_rates(self.rates, work, self.measured, read_summary(self.rundir.train_summary_json), seconds)
        elif isinstance(work, EvalWork):
            rates = eval_rates(self.rates, work, self.measured, seconds)
        elif isinstance(work, ReportWork):
            rates = replace(self.rates, report_s=max(seconds, 0.1))
        else:
            return
        self.rates = rates
        save_rates(self.key, rates)


def _machine(config: Config, model_path: str) -> tuple[str, Rates]:
    """The key of this run's rates (model, device, precision, quantization, eval engine) and the built-in ones."""
    from qatune.models.memory import folder_shape
    from qatune.models.placement import choose_placement

    p = choose_placement(config.train.quant, config.train.precision, cpu_bf16=True)
    try:
        shape = folder_shape(Path(model_path))
    except QatuneError:
        shape = None
    key = f"{config.model} {p.device} {p.precision} {p.quant} {config.eval.engine}"
    return key, default_rates(shape.params if shape else None, p.device.startswith("cuda"))


class _Active:
    clock: RunClock | None = None


def train_started(epoch_tokens: int) -> None:
    """The training loop starts (or starts an independent run): `epoch_tokens` is one pass's exact size."""
    if _Active.clock is not None:
        _Active.clock.measured.epoch_tokens = epoch_tokens


def trained(tokens: int, seconds: float) -> None:
    """One optimizer step over `tokens` took `seconds`."""
    if _Active.clock is not None:
        _Active.clock.measured.tokens += tokens
        _Active.clock.measured.seconds += seconds


def answered(rows: Iterable[dict]) -> None:
    """Eval rows just saved; those of models that generate count toward the eval set's measured rate."""
    clock = _Active.clock
    work = clock.plan.get(clock.stage or "") if clock is not None else None
    if clock is None or not isinstance(work, EvalWork):
        return
    m = clock.measured
    for row in rows:
        model = row.get("model", "")
        if model in work.answers:
            m.answers[model] = m.answers.get(model, 0) + 1
            m.new_tokens[model] = m.new_tokens.get(model, 0) + int(row.get("new_tokens") or 0)
            m.tokens += int(row.get("new_tokens") or 0)


class _RunBar(Progress):
    """A stage's progress bar with the run line under it while `qatune run` tracks the run (the final frame,
    the one a log keeps, has no run line)."""

    def get_renderables(self) -> Iterator[RenderableType]:
        yield from super().get_renderables()
        clock, live = _Active.clock, getattr(self, "live", None)  # rich renders once before `live` is set
        line = clock.live_line() if clock is not None and live is not None and live.is_started else None
        if line:
            yield Text(line, style="dim", no_wrap=True, overflow="ellipsis")


def progress_bar(*columns: Any, transient: bool) -> Progress:
    return _RunBar(*columns, console=console.console, transient=transient)
