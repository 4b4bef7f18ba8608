"""Everything retrieval: names.py (the grounded `NAME` + RAG_SUFFIX models), embeddings.py (MiniLM), index.py
(the run's index of training pairs), retriever.py, prompt.py (the grounded user turn), baseline.py (the
`retrieval` baseline), examples.py (grounded training examples), card.py (the exported index's usage) and
ask.py (the standalone script a grounded export carries: retrieval and answers without qatune)."""

from qatune.rag.names import RAG_SUFFIX, closed_book, grounded_name, is_grounded

__all__ = ["RAG_SUFFIX", "closed_book", "grounded_name", "is_grounded"]
