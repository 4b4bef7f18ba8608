"""The epoch sweep as runs of training: one run to the largest requested count in one-pass mode (the default), or
one run per count, each from the same initial adapter, in an independent sweep. Reads and writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qatune.config import TrainConfig


@dataclass(frozen=True)
class SweepRun:
    """One training run of the sweep: to `epochs`, saving a model at each count in `saves`. One-pass mode trains
    once to the largest count; an independent sweep trains each count from scratch and compares final epochs."""

    epochs: int
    saves: tuple[int, ...]
    independent: bool

    @property
    def label(self) -> int:
        """The `run` that metrics.jsonl rows and epoch results carry: the run's epoch count, 0 in one-pass mode."""
        return self.epochs if self.independent else 0

    def counts(self, epoch: int) -> bool:
        """Whether the epoch competes for `best` (an independent run's final epoch; every epoch in one pass)."""
        return not self.independent or epoch == self.epochs

    def tagged(self, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "run": self.epochs} if self.independent else row


def sweep_runs(tc: TrainConfig) -> list[SweepRun]:
    if tc.sweep == "independent":
        return [SweepRun(n, (n,), True) for n in tc.epochs]
    return [SweepRun(max(tc.epochs), tuple(tc.epochs), False)]
