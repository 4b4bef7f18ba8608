"""The user turn of a grounded prompt: the retrieved training pairs in front of the question, identical at
train, eval, chat, serve and export time. Where grounded training cut long retrieved answers to their head
(`--answer-head`), every grounded prompt shows them cut the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CUT_MARK = " ..."  # ends a retrieved answer shown by its head only


def grounded_question(question: str, pairs: list[dict], shorten: Callable[[str], str] | None = None) -> str:
    """The user turn of a grounded prompt: the retrieved pairs (each answer through `shorten`), then the question."""
    cut = shorten or (lambda answer: answer)
    refs = "\n".join(f"Q: {p['question']}\nA: {cut(str(p['answer']))}" for p in pairs)
    return f"Reference Q&A:\n{refs}\n\nQuestion: {question}"


def shortener(tokenizer: Any, head: int) -> Callable[[str], str] | None:
    """A retrieved answer in a grounded prompt, cut to its first `head` tokens and marked with CUT_MARK (None: with
    `head` 0, whole). Answers are cut once each, however often they are retrieved."""
    if head <= 0:
        return None
    cuts: dict[str, str] = {}

    def shorten(answer: str) -> str:
        if answer not in cuts:
            tokens = tokenizer.encode(answer, add_special_tokens=False)
            cuts[answer] = answer if len(tokens) <= head else tokenizer.decode(tokens[:head]).rstrip() + CUT_MARK
        return cuts[answer]

    return shorten
