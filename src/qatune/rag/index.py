"""The run's retrieval index: an offline MiniLM index of the training pairs (saved in RUN/index/, never
holding a test answer), top-k search, and the files that make it up; only this module reads or writes them.

A pair matches a question by the larger of two cosines: the question's to the pair's question, and to the pair's
question and answer read together (`pair_text`). People often ask in the answer's words rather than the stored
question's ("How many students are on each final project team?" for "How large are the final project teams?",
answered "Final project teams have 3 students."), so the answer is part of what a question can match; the pair's
own question keeps matching as before. The retrieval fallback reads the nearest training question's cosine alone
(`Hits.nearest`): the pair text makes questions the data does not answer look closer too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError
from qatune.storage import atomic_dir, atomic_write_json, file_sha256, read_json, read_jsonl, write_jsonl

if TYPE_CHECKING:
    import numpy as np

INDEX_FORMAT = 1
DEFAULT_K = 2
META_FILE = "index.json"
PAIRS_FILE = "pairs.jsonl"
VECTORS_FILE = "vectors.safetensors"


@dataclass
class Index:
    """Training pairs (originals only; augmented rewordings repeat them) with unit MiniLM embeddings."""

    pairs: list[dict]
    vectors: np.ndarray  # each pair's question
    source_sha256: str = ""
    fallback: dict | None = None  # the retrieval fallback's calibrated threshold (rag/fallback.py)
    pair_vectors: np.ndarray | None = None  # each pair's question and answer (None: an index saved before them)

    @property
    def min_similarity(self) -> float | None:
        return None if not self.fallback else float(self.fallback["min_similarity"])

    def search(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[list[tuple[int, float]]]:
        """For each question, the k best-matching pairs as (position, match score), best first (ties: the earlier
        row)."""
        return [hits.top for hits in self.lookup(embedder, questions, k)]

    def lookup(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[Hits]:
        """For each question, its k best-matching pairs and its nearest training question's cosine."""
        from qatune.rag.embeddings import encode

        if not questions:
            return []
        return ranked_hits(encode(embedder, list(questions)), self.vectors, self.pair_vectors, k)

    def contexts(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[list[dict]]:
        return [[self.pairs[j] for j, _ in hits] for hits in self.search(embedder, questions, k)]

    def save(self, folder: Path, k: int = DEFAULT_K) -> None:
        from safetensors.numpy import save_file

        with atomic_dir(folder) as tmp:
            write_jsonl(tmp / PAIRS_FILE, self.pairs)
            tensors = {"vectors": self.vectors}
            if self.pair_vectors is not None:
                tensors["pair_vectors"] = self.pair_vectors
            save_file(tensors, str(tmp / VECTORS_FILE))
            atomic_write_json(
                tmp / META_FILE,
                {
                    "format": INDEX_FORMAT,
                    "embedder": "sentence-transformers/all-MiniLM-L6-v2",
                    "pairs": len(self.pairs),
                    "source_sha256": self.source_sha256,
                    "k": k,
                    "fallback": self.fallback,
                    "how_to_use": "embed the question with all-MiniLM-L6-v2 (unit length), score each pair by "
                    "the larger dot product with its `vectors` row (its question) and its `pair_vectors` row (its "
                    f"question and answer), take the top {k} pairs, and ask the model the user turn "
                    "'Reference Q&A:\\nQ: ...\\nA: ...\\n\\nQuestion: QUESTION' (see README.md)",
                },
            )


def build_index(embedder: Any, train_jsonl: Path) -> Index:
    from qatune.rag.embeddings import encode

    rows = [r for r in read_jsonl(train_jsonl) if not r.get("augmented_from")]
    pairs = [{"id": str(r["id"]), "question": r["question"], "answer": r["answer"]} for r in rows]
    if not pairs:
        raise QatuneError("no training pairs to index; run qatune prepare", path=train_jsonl)
    questions = encode(embedder, [p["question"] for p in pairs])
    together = encode(embedder, [pair_text(p) for p in pairs])
    return Index(pairs, questions, file_sha256(train_jsonl), pair_vectors=together)


def pair_text(pair: dict) -> str:
    """What a pair's second vector embeds: its question and answer, read together."""
    return f"{pair['question']} {pair['answer']}"


@dataclass(frozen=True)
class Hits:
    top: list[tuple[int, float]]  # the k best-matching pairs as (position, match score), best first
    nearest: float  # the nearest training question's cosine: what the retrieval fallback reads


def ranked_hits(queries: np.ndarray, questions: np.ndarray, pairs: np.ndarray | None, k: int) -> list[Hits]:
    """Rank pairs for unit query rows: a pair's match score is the larger of the cosine to its question row and to
    its pair row (the question row alone without pair rows); ties go to the earlier pair."""
    import numpy as np

    asked = queries @ questions.T
    scores = asked if pairs is None else np.maximum(asked, queries @ pairs.T)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]
    return [
        Hits([(int(j), float(scores[i, j])) for j in row], float(asked[i].max()) if asked.shape[1] else 0.0)
        for i, row in enumerate(order)
    ]


def load_index(folder: Path) -> Index:
    from safetensors.numpy import load_file

    try:
        meta = read_json(folder / META_FILE)
        pairs = read_jsonl(folder / PAIRS_FILE)
        tensors = load_file(str(folder / VECTORS_FILE))
        vectors = tensors["vectors"]
    except Exception as exc:  # missing, truncated or foreign files (safetensors raises its own error type)
        raise QatuneError(f"retrieval index unreadable ({exc}); run qatune train again", path=folder) from None
    if meta.get("format") != INDEX_FORMAT or len(pairs) != len(vectors):
        raise QatuneError("retrieval index is from another qatune version; run qatune train again", path=folder)
    return Index(pairs, vectors, meta.get("source_sha256", ""), meta.get("fallback"), tensors.get("pair_vectors"))


def run_rag_k(rundir: Any) -> int:
    """How many retrieved pairs the run's grounded prompts hold (its training summary; DEFAULT_K before one)."""
    from qatune.train.state import read_summary

    summary = read_summary(rundir.train_summary_json)
    return (summary.rag_k if summary is not None else None) or DEFAULT_K


def run_index(rundir: Any, embedder: Any, k: int = DEFAULT_K) -> Index:
    """RUN/index, rebuilt when missing or made from other training data."""
    train = rundir.split_file("train")
    folder = rundir.index_dir
    if rundir.has_index:
        index = load_index(folder)
        meta = read_json(folder / META_FILE)
        same = index.source_sha256 == file_sha256(train) and meta.get("k") == k
        if same and "fallback" in meta and index.pair_vectors is not None:
            return index
    from qatune.rag.fallback import index_fallback

    index = build_index(embedder, train)
    index.fallback = index_fallback(index, embedder, rundir)
    index.save(folder, k)
    return index


def is_index(folder: Path) -> bool:
    """Whether `folder` holds a saved index (RunDir.has_index asks this of RUN/index)."""
    return (folder / META_FILE).exists()


def saved_k(folder: Path) -> int:
    """The k the index in `folder` was saved for (DEFAULT_K when it cannot be read)."""
    try:
        meta = read_json(folder / META_FILE) if is_index(folder) else None
    except (OSError, ValueError):
        meta = None
    return int((meta or {}).get("k") or DEFAULT_K)


def saved_fallback(folder: Path) -> dict | None:
    """The retrieval fallback saved with the index in `folder` (None when there is none)."""
    try:
        return (read_json(folder / META_FILE) or {}).get("fallback")
    except (OSError, ValueError):
        return None


def run_min_similarity(rundir: Any) -> float | None:
    """The run's calibrated retrieval-fallback threshold (None: no index, or an index saved without one)."""
    fallback = saved_fallback(rundir.index_dir) if rundir.has_index else None
    return None if not fallback else float(fallback["min_similarity"])


def vectors_sha256(folder: Path) -> str | None:
    """The hash of the index's embeddings, None without an index: grounded answers change when it does."""
    vectors = folder / VECTORS_FILE
    return file_sha256(vectors) if vectors.exists() else None
