"""Grounded answers chosen, not written, on long-answer data: a grounded model answers with the retrieved answer
whose opening it finds most probable for the question, measured against the same prompt without the question
(pointwise mutual information: the answer the question makes likelier, not the one that is likely anyway), and
that answer is shown whole. A small model does not copy a paragraph of retrieved text faithfully; choosing keeps
every fact of the pair it picks, costs one pass over the retrieved pairs, two short ones over the question or none,
and a teacher-forced pass per retrieved answer instead of hundreds of decoded tokens, and is the same in eval, chat,
serve and the exported model's script (docs/long-answers.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qatune.config import Config
    from qatune.rundir import RunDir

LONG_ANSWER = 256  # answer characters (median; about 64 tokens) from which a run's answers are long
NO_QUESTION = ""  # the question of the prompt that measures how likely an answer is anyway


def selects(rundir: RunDir, config: Config) -> bool:
    """Whether the run's grounded models choose their answer: `abstain.select` on/off, or auto: on when the
    training answers are long (median over LONG_ANSWER characters)."""
    setting = config.abstain.select
    if setting != "auto":
        return setting == "on"
    from qatune.storage import read_jsonl

    train = rundir.split_file("train")
    if not train.exists():
        return False
    return long_answers([len(str(r["answer"])) for r in read_jsonl(train) if not r.get("augmented_from")])


def long_answers(lengths: Sequence[int]) -> bool:
    """Whether answers of these character lengths are long (their median is over LONG_ANSWER). Counted in
    characters, the same for every tokenizer."""
    import statistics

    return bool(lengths) and statistics.median(lengths) > LONG_ANSWER


def opening(tokenizer: Any, head: int) -> Callable[[str], str]:
    """An answer's first `head` tokens (all of it when shorter, or with `head` 0): what a choice is scored on,
    the part of a long answer that grounded training teaches."""

    def cut(answer: str) -> str:
        if head <= 0:
            return answer
        tokens = tokenizer.encode(answer, add_special_tokens=False)
        return answer if len(tokens) <= head else tokenizer.decode(tokens[:head])

    return cut


def pick(asked: Sequence[float | None], anyway: Sequence[float | None]) -> int:
    """The candidate with the lowest NLL with the question (`asked`) less its NLL without it (`anyway`; zeros:
    plain likelihood); ties go to the earlier one, and the first where none can be scored."""
    scores = {j: a - b for j, (a, b) in enumerate(zip(asked, anyway, strict=True)) if a is not None and b is not None}
    return min(scores, key=lambda j: (scores[j], j)) if scores else 0
