"""The `retrieval` baseline: answer each question with the training answer of the pair that matches it best, as
the run's index ranks pairs (MiniLM cosine to the pair's question, or to its question and answer together). No
generation; it shows whether fine-tuning beats a plain lookup of the training data.
In a run with grounded models it also records the runners-up among the pairs a grounded prompt holds, so
the scores can say how much better than retrieval copying one of them could ever be."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.rag.embeddings import encode
from qatune.rag.index import pair_text, ranked_hits, run_rag_k
from qatune.storage import read_jsonl

RETRIEVAL = "retrieval"


@dataclass(frozen=True)
class Match:
    answer: str
    train_id: str
    question: str
    score: float  # the nearest training question's cosine (what the retrieval fallback reads)
    runners_up: tuple[str, ...] = ()  # the answers ranked 2..k, best first


def retrieved_k(rundir: Any) -> int:
    """Answers each retrieval row records: the run's grounded-prompt k when it has a retrieval index, else 1."""
    return run_rag_k(rundir) if rundir.has_index else 1


def training_pairs(train_jsonl: Path) -> list[dict]:
    """The training split's original pairs (augmented variants repeat them and are left out)."""
    rows = [r for r in read_jsonl(train_jsonl) if not r.get("augmented_from")]
    rows = [r for r in rows if isinstance(r.get("question"), str) and isinstance(r.get("answer"), str)]
    if not rows:
        raise QatuneError("no training pairs for the retrieval baseline; run qatune prepare", path=train_jsonl)
    return rows


def nearest_answers(embedder: Any, train_rows: list[dict], questions: list[str], k: int = 1) -> list[Match]:
    """For each question, the best-matching training pair (ties: the earlier row), and the answers of the next
    k - 1 pairs, ranked as the run's retrieval index ranks them."""
    if not questions:
        return []
    keys = encode(embedder, [r["question"] for r in train_rows])
    pair_keys = encode(embedder, [pair_text(r) for r in train_rows])
    found = ranked_hits(encode(embedder, list(questions)), keys, pair_keys, max(1, k))
    return [
        Match(
            answer=train_rows[hits.top[0][0]]["answer"],
            train_id=str(train_rows[hits.top[0][0]].get("id", hits.top[0][0])),
            question=train_rows[hits.top[0][0]]["question"],
            score=hits.nearest,
            runners_up=tuple(train_rows[j]["answer"] for j, _ in hits.top[1:]),
        )
        for hits in found
    ]
