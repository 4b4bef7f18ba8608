"""The training stage: stage.py (entry: epoch sweep, summary.json), state.py (summary.json and the checkpoint's
progress as typed records), setup.py, loop.py (the optimisation loop), loss.py (answer-only loss), batching.py,
checkpoint.py (resume) and telemetry.py (metrics.jsonl, TensorBoard)."""

from qatune.train.stage import can_resume, input_hash, is_current, train

__all__ = ["can_resume", "input_hash", "is_current", "train"]
