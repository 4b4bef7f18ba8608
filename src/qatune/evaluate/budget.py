"""How many new tokens an eval answer may take: a fixed number, or `auto` — twice the longest trained answer
plus a margin, so a fine-tuned answer always fits while a model that never stops (often the base model) is cut
early instead of decoding to a fixed cap that the data never needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from qatune.generate.budget import SMALLEST
from qatune.storage import file_sha256, read_jsonl

if TYPE_CHECKING:
    from qatune.config import Config
    from qatune.rundir import RunDir

FALLBACK = 256  # no training split to measure (a run that was never prepared)
MARGIN = 8
LARGEST = 1024


def auto_budget(longest_answer_tokens: int) -> int:
    return max(SMALLEST, min(LARGEST, 2 * longest_answer_tokens + MARGIN))


def budget_for(rundir: RunDir, config: Config, longest: Callable[[str], int]) -> int:
    """The configured number, or `auto` from `longest(train split path)`: the longest trained answer in tokens."""
    if config.eval.max_new_tokens != "auto":
        return int(config.eval.max_new_tokens)
    train = rundir.split_file("train")
    if not train.is_file():
        return FALLBACK
    return auto_budget(longest(str(train)) + 1)  # + the end-of-turn token


def answer_budget(rundir: RunDir, config: Config) -> int:
    """The eval's max_new_tokens for this run, counted with the model's tokenizer."""

    def longest(train: str) -> int:
        from qatune.models.resolve import resolve_model

        return _longest_tokens(train, file_sha256(train), resolve_model(config.model), config.trust_remote_code)

    return budget_for(rundir, config, longest)


@lru_cache(maxsize=8)
def _longest_tokens(train: str, sha: str, model_path: str, trust_remote_code: bool) -> int:
    from qatune.models.load import load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code)
    answers = {str(r.get("answer", "")) for r in read_jsonl(train)}
    return max((len(tokenizer.encode(a, add_special_tokens=False)) for a in answers), default=0)
