"""Retrieved context for grounded answers: an offline MiniLM index of the training pairs (saved in
RUN/index/, never holding a test answer), top-k search, and the user turn that carries the retrieved
pairs in front of the question, identical at train, eval, chat, serve and export time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError
from qatune.storage import atomic_dir, atomic_write_json, file_sha256, read_json, read_jsonl, write_jsonl

if TYPE_CHECKING:
    import numpy as np

RAG_SUFFIX = "+rag"
INDEX_FORMAT = 1
DEFAULT_K = 2


def is_grounded(name: str) -> bool:
    """`epoch-4+rag`, `best+rag`, `base+rag`: the model answers with retrieved training pairs in its prompt."""
    return name.endswith(RAG_SUFFIX)


def closed_book(name: str) -> str:
    """The adapter behind a model name (`best+rag` -> `best`)."""
    return name[: -len(RAG_SUFFIX)] if is_grounded(name) else name


def grounded_question(question: str, pairs: list[dict]) -> str:
    """The user turn of a grounded prompt: the retrieved pairs, then the question."""
    refs = "\n".join(f"Q: {p['question']}\nA: {p['answer']}" for p in pairs)
    return f"Reference Q&A:\n{refs}\n\nQuestion: {question}"


@dataclass
class Index:
    """Training pairs (originals only; augmented rewordings repeat them) with unit MiniLM embeddings."""

    pairs: list[dict]
    vectors: np.ndarray
    source_sha256: str = ""

    def search(self, embedder: Any, questions: list[str], k: int = DEFAULT_K) -> list[list[tuple[int, float]]]:
        """For each question, the k nearest pairs as (position, cosine), best first (ties: the earlier row)."""
        import numpy as np

        from qatune.evaluate.embeddings import encode

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
            write_jsonl(tmp / "pairs.jsonl", self.pairs)
            save_file({"vectors": self.vectors}, str(tmp / "vectors.safetensors"))
            atomic_write_json(
                tmp / "index.json",
                {
                    "format": INDEX_FORMAT,
                    "embedder": "sentence-transformers/all-MiniLM-L6-v2",
                    "pairs": len(self.pairs),
                    "source_sha256": self.source_sha256,
                    "k": k,
                    "how_to_use": "embed the question with all-MiniLM-L6-v2 (unit length), take the top "
                    f"{k} pairs by dot product, and ask the model the user turn "
                    "'Reference Q&A:\\nQ: ...\\nA: ...\\n\\nQuestion: QUESTION' (see README.md)",
                },
            )


def build_index(embedder: Any, train_jsonl: Path) -> Index:
    from qatune.evaluate.embeddings import encode

    rows = [r for r in read_jsonl(train_jsonl) if not r.get("augmented_from")]
    pairs = [{"id": str(r["id"]), "question": r["question"], "answer": r["answer"]} for r in rows]
    if not pairs:
        raise QatuneError("no training pairs to index; run qatune prepare", path=train_jsonl)
    return Index(pairs, encode(embedder, [p["question"] for p in pairs]), file_sha256(train_jsonl))


def load_index(folder: Path) -> Index:
    from safetensors.numpy import load_file

    try:
        meta = read_json(folder / "index.json")
        pairs = read_jsonl(folder / "pairs.jsonl")
        vectors = load_file(str(folder / "vectors.safetensors"))["vectors"]
    except Exception as exc:  # missing, truncated or foreign files (safetensors raises its own error type)
        raise QatuneError(f"retrieval index unreadable ({exc}); run qatune train again", path=folder) from None
    if meta.get("format") != INDEX_FORMAT or len(pairs) != len(vectors):
        raise QatuneError("retrieval index is from another qatune version; run qatune train again", path=folder)
    return Index(pairs, vectors, meta.get("source_sha256", ""))


def run_rag_k(rundir: Any) -> int:
    """How many retrieved pairs the run's grounded prompts hold (its training summary; DEFAULT_K before one)."""
    try:
        return int(read_json(rundir.train_summary_json).get("rag_k") or DEFAULT_K)
    except (OSError, ValueError, AttributeError):
        return DEFAULT_K


def run_index(rundir: Any, embedder: Any, k: int = DEFAULT_K) -> Index:
    """RUN/index, rebuilt when missing or made from other training data."""
    train = rundir.split_file("train")
    folder = rundir.index_dir
    if (folder / "index.json").exists():
        index = load_index(folder)
        if index.source_sha256 == file_sha256(train) and read_json(folder / "index.json").get("k") == k:
            return index
    index = build_index(embedder, train)
    index.save(folder, k)
    return index
