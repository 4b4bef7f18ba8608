"""Grounded model names: a model answering with retrieved training pairs in its prompt is named after the
adapter it uses plus RAG_SUFFIX (`best+rag`, `epoch-4+rag`, `base+rag`)."""

from __future__ import annotations

RAG_SUFFIX = "+rag"


def is_grounded(name: str) -> bool:
    """`epoch-4+rag`, `best+rag`, `base+rag`: the model answers with retrieved training pairs in its prompt."""
    return name.endswith(RAG_SUFFIX)


def closed_book(name: str) -> str:
    """The adapter behind a model name (`best+rag` -> `best`)."""
    return name[: -len(RAG_SUFFIX)] if is_grounded(name) else name


def grounded_name(name: str) -> str:
    """The grounded model of an adapter (`best` -> `best+rag`; a grounded name stays as it is)."""
    return closed_book(name) + RAG_SUFFIX
