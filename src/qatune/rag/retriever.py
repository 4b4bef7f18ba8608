"""The retriever grounded models answer with: the run's index of training pairs, the MiniLM embedder and the
run's k, loaded once per engine."""

from __future__ import annotations

from typing import Any


class Retriever:
    """The run's index of training pairs with the MiniLM embedder: top-k context for grounded answers."""

    def __init__(self, index: Any, embedder: Any, k: int):
        self.index, self.embedder, self.k = index, embedder, k

    def contexts(self, questions: list[str]) -> list[list[dict]]:
        return self.index.contexts(self.embedder, questions, self.k)

    def lookup(self, questions: list[str]) -> list[tuple[list[dict], float]]:
        """For each question, the pairs a grounded prompt holds and how close the nearest training question is."""
        found = self.index.lookup(self.embedder, questions, self.k)
        return [([self.index.pairs[j] for j, _ in hits.top], hits.nearest) for hits in found]

    @property
    def min_similarity(self) -> float | None:
        """The calibrated threshold saved with the index (None: the index has none)."""
        return self.index.min_similarity


def run_retriever(rundir: Any) -> Retriever | None:
    """The retriever of a run trained with grounded examples (RUN/index exists), else None."""
    from qatune.rag.index import load_index, run_rag_k

    if not rundir.has_index:
        return None
    from qatune.rag.embeddings import load_embedder

    return Retriever(load_index(rundir.index_dir), load_embedder(), run_rag_k(rundir))
