"""The training stage: stage.py (entry: epoch sweep, summary.json), sweep.py (the runs of a sweep), state.py
(summary.json and the checkpoint's progress as typed records), setup.py, loop.py (the optimisation loop), loss.py
(answer-only loss), batching.py, checkpoint.py (resume), telemetry.py (metrics.jsonl, TensorBoard) and work.py
(the training left, for the run's clock)."""

from qatune.train.stage import adapter_names, can_resume, input_hash, is_current, train
from qatune.train.work import work_left

__all__ = ["adapter_names", "can_resume", "input_hash", "is_current", "train", "work_left"]
