"""The text of an answer while its tokens arrive: pieces handed out as soon as they are final, so that the
pieces always join to the text of the whole answer (cut at the first stop string)."""

from __future__ import annotations

from typing import Any


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """The text before the first stop string, and whether one occurred."""
    cuts = [text.index(s) for s in stop or [] if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _stop_start(text: str, stop: list[str] | None) -> int:
    """How many trailing characters could still become a stop string (held back until they cannot)."""
    return max((k for s in stop or [] for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class TextStream:
    """Decodes a row's tokens after each step and hands out what is new. Text is held back while it ends in
    an incomplete multi-byte character or in the start of a stop string, and a stop string ends the text
    (`cut`), so no piece has to be taken back."""

    def __init__(self, tokenizer: Any, stop_ids: list[int], stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.stop = stop
        self.sent = ""
        self.cut = False  # a stop string ended the answer

    def update(self, tokens: list[int], final: bool = False) -> str:
        """The text new since the last call, for all `tokens` so far (a trailing stop token is not text)."""
        if self.cut:
            return ""
        kept = tokens[:-1] if tokens and tokens[-1] in self.stop_ids else tokens
        text, self.cut = cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True), self.stop)
        if not (final or self.cut):
            if text.endswith("\ufffd"):
                return ""
            text = text[: len(text) - _stop_start(text, self.stop)]
        if not text.startswith(self.sent):  # a decoding that rewrote earlier text: keep what was sent
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece
