"""Training telemetry on the main process: RUN/train/metrics.jsonl (fsync'd lines), TensorBoard events under
RUN/train/tb and a rich progress bar (epoch, step, loss, tokens/s, ETA) unless quiet; what each step measures
also goes to the run's clock when `qatune run` hands one over (qatune.eta)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from qatune import console
from qatune.rundir import RunDir
from qatune.storage import append_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from qatune.eta import RunClock


def _key(row: dict[str, Any]) -> tuple[int, int]:
    return int(row.get("run", 0)), int(row.get("step", 0))


class TrainLog:
    """One per process; only the main process writes. On resume, lines logged after the checkpoint (work
    that is about to be redone) are dropped so the curve has no duplicates."""

    def __init__(self, rundir: RunDir, enabled: bool, resume_at: tuple[int, int] | None, clock: RunClock | None = None):
        self.enabled, self.clock = enabled, clock
        self.path = rundir.metrics_jsonl
        self._bar: Any = None
        self._task: Any = None
        self._tb: Any = None
        if not enabled:
            return
        if resume_at is None:  # a fresh start: no curves of an earlier training
            write_jsonl(self.path, [])
            shutil.rmtree(rundir.tb_dir, ignore_errors=True)
        else:
            write_jsonl(self.path, [r for r in read_jsonl(self.path) if _key(r) <= resume_at])
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_at[1] + 1 if resume_at else None
        self._tb = SummaryWriter(log_dir=str(rundir.tb_dir), purge_step=purge)

    def start_bar(self, title: str, total_steps: int, done_steps: int, epoch_tokens: int) -> None:
        """`epoch_tokens`: the tokens of one pass over the training examples."""
        if self.clock is not None:
            self.clock.train_started(epoch_tokens)
        if not self.enabled or console.is_quiet():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        self._bar = console.progress_bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            transient=False,
            footer=self.clock.live_line if self.clock is not None else None,
        )
        self._bar.start()
        self._task = self._bar.add_task(title, total=total_steps, completed=done_steps, loss="-", tps="-")

    def bar(self, description: str, loss: float, tokens: int, seconds: float) -> None:
        """One optimizer step over `tokens` that took `seconds`."""
        if self.clock is not None:
            self.clock.trained(tokens, seconds)
        if self._bar is not None:
            tps = f"{tokens / max(seconds, 1e-9):,.0f}"
            self._bar.update(self._task, advance=1, description=description, loss=f"{loss:.3f}", tps=tps)

    def stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def step(self, row: dict[str, Any]) -> None:
        """row: run, step, epoch, loss, lr, grad_norm, tokens_per_second."""
        if not self.enabled:
            return
        append_jsonl(self.path, [row])
        prefix = f"run-{row['run']}/" if row.get("run") else ""
        for key in ("loss", "lr", "grad_norm", "tokens_per_second"):
            self._tb.add_scalar(f"{prefix}train/{key}", row[key], row["step"])

    def evaluation(self, row: dict[str, Any]) -> None:
        """row: run, step, epoch, eval_loss."""
        if not self.enabled:
            return
        append_jsonl(self.path, [row])
        prefix = f"run-{row['run']}/" if row.get("run") else ""
        if row.get("eval_loss") is not None:
            self._tb.add_scalar(f"{prefix}eval/loss", row["eval_loss"], row["step"])

    def close(self) -> None:
        self.stop_bar()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
