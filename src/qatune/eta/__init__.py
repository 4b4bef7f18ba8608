"""How long the rest of `qatune run` will take: the work left in each stage, counted from the run directory,
turned into seconds by rates remembered from this machine's earlier runs and then by what the running stage
measures; shown as one `run:` line under the stage bars and at stage boundaries."""

from qatune.eta.clock import RunClock, answered, progress_bar, train_started, trained
from qatune.eta.estimate import REPORT, Work
from qatune.eta.work import eval_work, train_work

__all__ = [
    "REPORT",
    "RunClock",
    "Work",
    "answered",
    "eval_work",
    "progress_bar",
    "train_started",
    "train_work",
    "trained",
]
