"""The retrieval fallback: how close the nearest training question must be for a grounded model (or the retrieval
baseline) to answer at all. Its threshold is calibrated on validation questions when the index is built and saved
with it: the lowest similarity of a validation question about a trained fact (a reworded training question) to
its nearest training question. People's own rewordings stayed at least that close on every public set (docs/trust.md,
"A retrieval fallback without a margin"), so no margin is taken off it."""

from __future__ import annotations

import math
from typing import Any


def calibrate(answerable: list[float], unanswerable: list[float]) -> dict[str, Any] | None:
    """The fallback's record for index.json (None without validation questions about trained facts)."""
    if not answerable:
        return None
    threshold = math.floor(min(answerable) * 1e4) / 1e4  # saved to 4 places, never above that question's
    caught = sum(s < threshold for s in unanswerable)
    return {
        "min_similarity": threshold,
        "rule": "lowest similarity of a validation question about a trained fact",
        "answerable_val": len(answerable),
        "unanswerable_val": len(unanswerable),
        "unanswerable_val_caught": caught,
    }


def index_fallback(index: Any, embedder: Any, rundir: Any) -> dict[str, Any] | None:
    """Calibrate on RUN/data/val.jsonl (recall questions) and the validation part of RUN/data/refusals.jsonl."""
    from qatune.storage import read_jsonl

    def top(questions: list[str]) -> list[float]:
        return [hits.nearest for hits in index.lookup(embedder, questions, 1)]

    val = rundir.split_file("val")
    refusals = rundir.split_file("refusals")
    answerable = [r["question"] for r in (read_jsonl(val) if val.exists() else []) if r.get("kind") != "unseen"]
    unanswerable = [r["question"] for r in (read_jsonl(refusals) if refusals.exists() else []) if r["part"] == "val"]
    return calibrate(top(answerable), top(unanswerable))
