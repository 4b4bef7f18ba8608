"""The user turn of a grounded prompt: the retrieved training pairs in front of the question, identical at
train, eval, chat, serve and export time."""

from __future__ import annotations


def grounded_question(question: str, pairs: list[dict]) -> str:
    """The user turn of a grounded prompt: the retrieved pairs, then the question."""
    refs = "\n".join(f"Q: {p['question']}\nA: {p['answer']}" for p in pairs)
    return f"Reference Q&A:\n{refs}\n\nQuestion: {question}"
