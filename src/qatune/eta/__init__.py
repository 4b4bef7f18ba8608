"""How long the rest of `qatune run` will take: the work each stage reports it has left (train.work_left,
evaluate.work.work_left), priced by the rates remembered from this machine's earlier runs and then by what the
running stage reports to the run's clock; shown as one `run:` line under the stage bars and at stage boundaries."""

from qatune.eta.clock import RunClock
from qatune.eta.estimate import REPORT, Work

__all__ = ["REPORT", "RunClock", "Work"]
