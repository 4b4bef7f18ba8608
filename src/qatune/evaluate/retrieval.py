"""The `retrieval` baseline: answer each question with the training answer whose question is closest
(MiniLM cosine). No generation; it shows whether fine-tuning beats a plain lookup of the training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.evaluate.embeddings import encode
from qatune.storage import read_jsonl

RETRIEVAL = "retrieval"


@dataclass(frozen=True)
class Match:
    answer: str
    train_id: str
    question: str
    score: float


def training_pairs(train_jsonl: Path) -> list[dict]:
    """The training split's original pairs (augmented variants repeat them and are left out)."""
    rows = [r for r in read_jsonl(train_jsonl) if not r.get("augmented_from")]
    rows = [r for r in rows if isinstance(r.get("question"), str) and isinstance(r.get("answer"), str)]
    if not rows:
        raise QatuneError("no training pairs for the retrieval baseline; run qatune prepare", path=train_jsonl)
    return rows


def nearest_answers(embedder: Any, train_rows: list[dict], questions: list[str]) -> list[Match]:
    """For each question, the training pair with the most similar question (ties: the earlier row)."""
    if not questions:
        return []
    keys = encode(embedder, [r["question"] for r in train_rows])
    queries = encode(embedder, list(questions))
    sims = queries @ keys.T
    best = sims.argmax(axis=1)
    return [
        Match(
            answer=train_rows[j]["answer"],
            train_id=str(train_rows[j].get("id", j)),
            question=train_rows[j]["question"],
            score=float(sims[i, j]),
        )
        for i, j in enumerate(best.tolist())
    ]
