"""Refusal training examples: questions the data does not answer (the training part of RUN/data/refusals.jsonl)
answered with the refusal, so the fine-tuned models learn to abstain where the data is silent (refusal-aware
tuning). With --refusal-grounded the same questions are also asked grounded, with retrieved pairs that cannot
answer them (rag/examples.py); off by default, as it cost grounded answers ROUGE-L (docs/trust.md)."""

from __future__ import annotations

import random
from pathlib import Path

from qatune.rundir import RunDir
from qatune.storage import read_jsonl, write_jsonl

REFUSALS_FILE = "refusals.jsonl"
KINDS = ("near-miss", "missing-detail", "off-topic")


def refusal_questions(rundir: RunDir, per_pair: float, seed: int) -> list[dict]:
    """`per_pair` x the training pairs of the refusal questions' training part: near misses first (at most half,
    they teach where the data's edge is), then the banks in turn."""
    path = rundir.split_file("refusals")
    pool = [r for r in (read_jsonl(path) if path.exists() else []) if r.get("part") == "train"]
    pairs = sum(1 for r in read_jsonl(rundir.split_file("train")) if not r.get("augmented_from"))
    wanted = min(len(pool), round(per_pair * pairs))
    rng = random.Random(f"{seed}:refusals")
    by_kind = {k: rng.sample(rows, len(rows)) for k in KINDS if (rows := [r for r in pool if r["kind"] == k])}
    near = by_kind.pop("near-miss", [])[: wanted // 2]
    rest = [r for group in _interleave(list(by_kind.values())) for r in group]
    return near + rest[: wanted - len(near)]


def _interleave(groups: list[list[dict]]) -> list[list[dict]]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


def write_refusal_split(rundir: RunDir, questions: list[dict], refusal: str) -> Path:
    """RUN/train/refusals.jsonl: each question answered with the refusal (closed-book)."""
    path = rundir.train_dir / REFUSALS_FILE
    rows = [
        {"id": f"refuse-{q['id']}", "question": q["question"], "answer": refusal, "refusal": True} for q in questions
    ]
    write_jsonl(path, rows)
    return path
