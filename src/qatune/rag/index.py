"""The run's retrieval index: an offline MiniLM index of the training pairs (saved in RUN/index/, never
holding a test answer), top-k search, and the files that make it up; only this module reads or writes them."""

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
    vectors: np.ndarray
    source_sha256: str = ""
    fallback: dict | None = None  # the retrieval fallback's calibrated threshold (rag/fallback.py)

    @property
    def min_similarity(self) -> float | None:
        return None if not self.fallback else float(self.fallback["min_similarity"])

    def search(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[list[tuple[int, float]]]:
        """For each question, the k nearest pairs as (position, cosine), best first (ties: the earlier row)."""
        import numpy as np

        from qatune.rag.embeddings import encode

        if not questions:
            return []
        sims = encode(embedder, list(questions)) @ self.vectors.T
        k = min(k, len(self.pairs))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return [[(int(j), float(sims[i, j])) for j in row] for i, row in enumerate(order)]

    def contexts(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[list[dict]]:
        return [[self.pairs[j] for j, _ in hits] for hits in self.search(embedder, questions, k)]

    def save(self, folder: Path, k: int = DEFAULT_K) -> None:
        from safetensors.numpy import save_file

        with atomic_dir(folder) as tmp:
            write_jsonl(tmp / PAIRS_FILE, self.pairs)
            save_file({"vectors": self.vectors}, str(tmp / VECTORS_FILE))
            atomic_write_json(
                tmp / META_FILE,
                {
                    "format": INDEX_FORMAT,
                    "embedder": "sentence-transformers/all-MiniLM-L6-v2",
                    "pairs": len(self.pairs),
                    "source_sha256": self.source_sha256,
                    "k": k,
                    "fallback": self.fallback,
                    "how_to_use": "embed the question with all-MiniLM-L6-v2 (unit length), take the top "
                    f"{k} pairs by dot product, and ask the model the user turn "
                    "'Reference Q&A:\\nQ: ...\\nA: ...\\n\\nQuestion: QUESTION' (see README.md)",
                },
            )


def build_index(embedder: Any, train_jsonl: Path) -> Index:
    from qatune.rag.embeddings import encode

    rows = [r for r in read_jsonl(train_jsonl) if not r.get("augmented_from")]
    pairs = [{"id": str(r["id"]), "question": r["question"], "answer": r["answer"]} for r in rows]
    if not pairs:
        raise QatuneError("no training pairs to index; run qatune prepare", path=train_jsonl)
    return Index(pairs, encode(embedder, [p["question"] for p in pairs]), file_sha256(train_jsonl))


def load_index(folder: Path) -> Index:
    from safetensors.numpy import load_file

    try:
        meta = read_json(folder / META_FILE)
        pairs = read_jsonl(folder / PAIRS_FILE)
        vectors = load_file(str(folder / VECTORS_FILE))["vectors"]
    except Exception as exc:  # missing, truncated or foreign files (safetensors raises its own error type)
        raise QatuneError(f"retrieval index unreadable ({exc}); run qatune train again", path=folder) from None
    if meta.get("format") != INDEX_FORMAT or len(pairs) != len(vectors):
        raise QatuneError("retrieval index is from another qatune version; run qatune train again", path=folder)
    return Index(pairs, vectors, meta.get("source_sha256", ""), meta.get("fallback"))


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
        if index.source_sha256 == file_sha256(train) and meta.get("k") == k and "fallback" in meta:
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
