"""Answer leads for long-answer data: closed-book examples (a pair's own question and its rewordings) train the
answer's opening to its last sentence or line end within the answer head, then end-of-turn. A small model does not
learn a paragraph per pair in a few epochs; taught whole answers, its closed-book answers loop through what it half
remembers and never end. Taught the lead, they end, cost a fraction of the decoding, and keep the fact a long
answer opens with; grounded models still show the whole retrieved answer (docs/long-answers.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qatune.console import info
from qatune.generate.select import long_answers

if TYPE_CHECKING:
    from qatune.config import TrainConfig
    from qatune.rundir import RunDir

BOUNDARY = re.compile(r"[.!?:](?=\s)|\n")  # a sentence or line end


def trains_leads(tc: TrainConfig, rows: list[dict]) -> bool:
    """Whether closed-book examples train answer leads, for a training split's `rows`: `answer_lead` on/off, or
    auto: on when its pairs' answers are long (median over 256 characters); never without an answer head."""
    if tc.answer_head <= 0 or tc.answer_lead == "off":
        return False
    pairs = [len(str(r.get("answer", ""))) for r in rows if not r.get("augmented_from")]
    return tc.answer_lead == "on" or long_answers(pairs)


def leads_on(tc: TrainConfig, rundir: RunDir) -> bool:
    """`trains_leads` for the run's training split, said at the start of training when `auto` turns it on."""
    from qatune.storage import read_jsonl

    train = rundir.split_file("train")
    on = trains_leads(tc, read_jsonl(train) if train.exists() else [])
    if on and tc.answer_lead == "auto":
        info(
            f"long answers: closed-book examples train each answer's lead (to its last sentence or line end within "
            f"{tc.answer_head} tokens) and end there, so closed-book answers end; grounded models still show whole "
            "retrieved answers (--answer-lead off trains whole answers)"
        )
    return on


def leader(tokenizer: Any, head: int) -> Callable[[str], str]:
    """An answer's lead: all of it when it has at most `head` tokens, else its text to the last sentence or line
    end within its first `head` tokens (those tokens when there is none past their first quarter)."""

    def lead(answer: str) -> str:
        tokens = tokenizer.encode(answer, add_special_tokens=False)
        if len(tokens) <= head:
            return answer
        opening = tokenizer.decode(tokens[:head])
        ends = [m.end() for m in BOUNDARY.finditer(opening) if m.end() >= len(opening) // 4]
        return (opening[: ends[-1]] if ends else opening).rstrip()

    return lead
