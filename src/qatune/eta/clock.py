"""The clock of one `qatune run`: at every stage boundary it asks the stages for the work they have left and prints
the run line; the running stage reports what it measures to the clock it was handed, and its bar shows the live
run line; a finished stage's measurements update the rates remembered for this machine."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from qatune import console
from qatune.console import QatuneError
from qatune.eta import estimate
from qatune.eta.estimate import Measured, ReportWork, Work
from qatune.rundir import RunDir
from qatune.trust.guard import QUESTION_CHECK, RETRIEVAL_FALLBACK

if TYPE_CHECKING:
    from qatune.config import Config

REFRESH_S = 2.0  # the live line is recomputed this often
BEFORE_ANY_PASS = (RETRIEVAL_FALLBACK, QUESTION_CHECK)  # abstentions decided before the model runs (trust.guard)


class RunClock:
    """`planner` gives the work left per stage (None: reused, counts 0). Rates are remembered per model, device,
    precision, quantization and eval engine; the built-in ones are scaled to the model's size."""

    def __init__(self, rundir: RunDir, config: Config, model_path: str, planner: Callable[[], dict[str, Work | None]]):
        """`model_path`: the run's model, resolved (what `model.preflight` returns)."""
        from qatune.models.memory import folder_shape
        from qatune.models.placement import choose_placement

        p = choose_placement(config.train.quant, config.train.precision, cpu_bf16=True)
        try:
            shape = folder_shape(Path(model_path))
        except QatuneError:
            shape = None
        params = shape.params if shape else None
        self.key = f"{config.model} {p.device} {p.precision} {p.quant} {config.eval.engine}"
        self.rates, _ = estimate.load_rates(self.key, estimate.default_rates(params, p.device.startswith("cuda")))
        self.rundir, self.planner, self.start = rundir, planner, time.monotonic()
        self.plan: dict[str, Work | None] = {}
        self.finished: set[str] = set()
        self.begin(None)

    def begin(self, stage: str | None) -> None:
        self.stage, self.stage_start, self.measured = stage, time.monotonic(), Measured()
        self._shown = (-math.inf, "")

    def end(self, stage: str, ran: bool, seconds: float) -> None:
        if ran:
            self._remember(self.plan.get(stage), seconds)
        self.finished.add(stage)
        self.begin(None)
        try:
            self.plan = self.planner()
        except Exception:  # an estimate never stops a run: the stage reading the same files says what is wrong
            pass
        if any(w is not None and not isinstance(w, ReportWork) for w in self._later().values()):
            status = f"{stage} done" if ran else f"{stage} up to date"
            if not console.is_quiet():  # one line, however narrow the terminal or log
                line = estimate.run_line(status, time.monotonic() - self.start, self.left())
                console.console.print(line, markup=False, soft_wrap=True)

    def train_started(self, epoch_tokens: int) -> None:
        """The training loop starts (or starts an independent run): `epoch_tokens` is one pass's exact size."""
        self.measured.epoch_tokens = epoch_tokens

    def trained(self, tokens: int, seconds: float) -> None:
        """One optimizer step over `tokens` took `seconds`."""
        self.measured.tokens += tokens
        self.measured.seconds += seconds

    def answered(self, rows: Iterable[dict], seconds: float = 0.0, chosen: bool = False) -> None:
        """Answers just generated and saved (not retrieval's, not copies) in `seconds`: the eval set's measured
        rate. `chosen`: a choosing model's batch (generate.select), whose time is measured apart."""
        m = self.measured
        for row in rows:
            model, tokens = str(row["model"]), int(row.get("new_tokens") or 0)
            m.answers[model] = m.answers.get(model, 0) + 1
            if row.get("abstained_by") in BEFORE_ANY_PASS:
                m.unasked[model] = m.unasked.get(model, 0) + 1
            elif chosen:
                m.chosen += 1
            m.new_tokens[model] = m.new_tokens.get(model, 0) + tokens
            m.tokens += tokens
        if chosen:
            m.chosen_seconds += seconds

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
            status = f"{self.stage} {100 * elapsed / max(elapsed + stage_left, 1e-9):.0f}%"
            self._shown = (now, estimate.run_line(status, now - self.start, self.left(stage_left)))
        return self._shown[1]

    def _remember(self, work: Work | None, seconds: float) -> None:
        if work is not None:
            self.rates = work.learned(self.rates, self.measured, seconds, self.rundir)
            estimate.save_rates(self.key, self.rates)
