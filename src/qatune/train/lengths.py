"""How long training examples are: `max_length` (auto: the longest pair, and the model's context for grounded
examples), the answer head that reworded and grounded examples train of a long answer (with retrieved answers cut
there), and the share of grounded examples an epoch trains (auto: halved for long answers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import info
from qatune.generate.select import long_answers
from qatune.prompts import encode_pair
from qatune.train.batching import read_split

if TYPE_CHECKING:
    from qatune.config import TrainConfig
    from qatune.rundir import RunDir

AUTO_GROUNDED_LENGTH = 4096  # `max_length: auto` for grounded examples when the model states no context length


def grounded_share_for(tc: TrainConfig, rundir: RunDir) -> float:
    """The share of grounded examples an epoch trains (`auto`: from the trained answers' lengths), said when halved."""
    from qatune.storage import read_jsonl

    if tc.grounded_share != "auto" or not tc.grounded:
        return grounded_share(tc.grounded_share if tc.grounded_share != "auto" else 1.0, [])
    rows = [r for r in read_jsonl(rundir.split_file("train")) if not r.get("augmented_from")]
    lengths = [len(str(r["answer"])) for r in rows]
    share = grounded_share("auto", lengths)
    if share < 1:
        info(
            f"long answers (median {sorted(lengths)[len(lengths) // 2]} characters): each epoch trains {share:.0%} "
            "of the grounded examples, in turn (--grounded-share 1 trains all of them every epoch)"
        )
    return share


def training_lengths(tc: TrainConfig, tokenizer: Any, rundir: RunDir, model_path: str) -> tuple[int, int]:
    """The longest tokenized pair and grounded example: `max_length` for both, or for `auto` the longest training
    pair through the chat template, so no answer is cut, and the model's context for grounded examples, whose
    retrieved pairs then all fit (their answers are cut to the answer head where they are long)."""
    if isinstance(tc.max_length, int):
        return tc.max_length, tc.max_length
    from qatune.storage import read_json

    try:
        context = int(read_json(f"{model_path}/config.json").get("max_position_embeddings") or 0) or None
    except (OSError, ValueError, TypeError):
        context = None
    return fitted_length(rundir.split_file("train"), tokenizer, context), context or AUTO_GROUNDED_LENGTH


def fits_in(tokenizer: Any, max_length: int, head: int = 0) -> Callable[[str, str], bool]:
    """Whether a grounded example's prompt and answer fit in `max_length` tokens: the whole answer, or with `head`
    its first `head` tokens (what such an example trains)."""
    from qatune.prompts import IGNORE_INDEX, encode_pair

    def fits(question: str, answer: str) -> bool:
        encoded = encode_pair(tokenizer, question, answer, max_length)
        if encoded is None:
            return False
        prompt = sum(1 for t in encoded.labels if t == IGNORE_INDEX)
        return not encoded.cut or (head > 0 and prompt + head <= max_length)

    return fits


def announce_heads(tc: TrainConfig, examples: list, tokenizer: Any, longest: int, leads: bool = False) -> None:
    """Say when long answers are trained by their head only (the time this saves costs some closed-book recall)."""
    from qatune.prompts import stop_token_ids

    stops = set(stop_token_ids(tokenizer))
    cut = sum(1 for e in examples if e.labels and e.labels[-1] not in stops)
    if tc.answer_head and cut:
        own = "closed-book examples train leads" if leads else "each pair's own question trains its whole answer"
        info(
            f"long answers: {cut} {'grounded' if leads else 'reworded or grounded'} example(s) train the first "
            f"{tc.answer_head} tokens of their answer and show retrieved answers cut there ({own}; --answer-head 0 "
            f"trains whole answers everywhere, at several times the tokens); longest example {longest} tokens"
        )


def grounded_share(share: float | str, answer_chars: list[int]) -> float:
    """`grounded_share`, or for `auto` 1, or 0.5 when the trained answers are long (their grounded examples,
    context included, cost the most)."""
    if share != "auto":
        return float(share)
    return 0.5 if long_answers(answer_chars) else 1.0


def fitted_length(path: Path, tokenizer: Any, limit: int | None) -> int:
    """`max_length: auto`: the longest pair of a split through the chat template (question, answer, end-of-turn),
    at most `limit` (the model's context), so no trained answer is cut."""
    longest = 0
    for row in read_split(Path(path)):
        enc = encode_pair(tokenizer, str(row["question"]), str(row["answer"]), limit or 1 << 30)
        longest = max(longest, len(enc.input_ids) if enc is not None else 0)
    return max(16, min(longest, limit) if limit else longest)
