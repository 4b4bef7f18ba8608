"""How many new tokens an answer may take when what it can need is known: the longest answer it could give
(a retrieved answer, a trained one) with a quarter more and a margin, so a model that copies or recalls an answer
finishes it while one that never stops is cut near the length the data needs."""

from __future__ import annotations

import math

SMALLEST = 32  # tokens: never less (short answers, refusals)
HEADROOM, MARGIN = 1.25, 16


def fitted_budget(longest_answer_tokens: int) -> int:
    """New tokens for an answer whose longest possible form has `longest_answer_tokens` tokens."""
    return max(SMALLEST, math.ceil(HEADROOM * longest_answer_tokens) + MARGIN)
