"""Header detection shared by every format reader: the names that mark the question and answer columns,
finding the header row among the first rows (with any extra columns asked for by name), and the clearest
error when the columns cannot be found."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qatune.console import QatuneError

HEADER_SCAN_ROWS = 50
QUESTION_NAMES = ("question", "questions", "prompt", "instruction", "query", "q", "input", "ques", "userquestion")
ANSWER_NAMES = (
    "answer",
    "answers",
    "response",
    "completion",
    "reply",
    "output",
    "a",
    "ans",
    "referenceanswer",
    "expectedanswer",
    "reference",
    "groundtruth",
)
_QUESTION_WORDS = {"question", "questions", "prompt", "query"}
_ANSWER_WORDS = {"answer", "answers", "response", "reply"}


@dataclass(frozen=True)
class Columns:
    """Column names asked for; `strict` makes a given name mandatory rather than a first preference.
    Without `answer_required` a header with only a question column is enough (a file of questions);
    `extra` names more columns to read when present, matched by `norm_name`."""

    question: str | None = None
    answer: str | None = None
    strict: bool = True
    answer_required: bool = True
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Header:
    row: int | None
    qi: Any  # column index (tabular) or key (records)
    ai: Any  # None: no answer column (only when answers are not required)
    question_col: str
    answer_col: str | None
    extra: dict[str, Any] = field(default_factory=dict)  # asked-for name -> index or key, for the columns found
    extra_cols: dict[str, str] = field(default_factory=dict)  # asked-for name -> the column's name in the file


Converter = Callable[[Any], tuple[str | None, str | None]]


def norm_name(value: object) -> str:
    return re.sub(r"[\W_]+", "", str(value).casefold()) if value is not None else ""


def _words(value: object) -> set[str]:
    return set(re.split(r"[\W_]+", str(value).casefold())) - {""}


def _find(
    names: Sequence[str | None],
    wanted: str | None,
    strict: bool,
    aliases: tuple[str, ...],
    words: set[str],
    other: set[str],
) -> int | None:
    norms = [norm_name(n) if n else "" for n in names]
    if wanted is not None:
        target = norm_name(wanted)
        if target in norms:
            return norms.index(target)
        if strict:
            return None
    for alias in aliases:
        if alias in norms:
            return norms.index(alias)
    for i, name in enumerate(names):  # e.g. "Student Question"; a sentence is data, not a header
        found = _words(name) if name and len(name) <= 40 and not name.rstrip().endswith(("?", ".")) else set()
        if found & words and not found & other and len(found) <= 4:
            return i
    return None


def match_header(names: Sequence[str | None], cols: Columns) -> tuple[int | None, int | None]:
    """Indexes of the question and answer columns among header names (None where not found)."""
    names = [n[:200] if n else None for n in names[:500]]
    qi = _find(names, cols.question, cols.strict, QUESTION_NAMES, _QUESTION_WORDS, _ANSWER_WORDS)
    ai = _find(names, cols.answer, cols.strict, ANSWER_NAMES, _ANSWER_WORDS, _QUESTION_WORDS)
    if qi is not None and qi == ai:
        ai = None
    return qi, ai


def enough(qi: int | None, ai: int | None, cols: Columns) -> bool:
    """Whether the columns found make a header: a question column, and an answer column unless not required."""
    return qi is not None and (ai is not None or not cols.answer_required)


def make_header(
    row: int | None, names: Sequence[str | None], qi: int, ai: int | None, cols: Columns, keyed: bool = False
) -> Header:
    """The Header for the question/answer columns at `qi`/`ai` of `names`, with the extra columns found there;
    `keyed`: rows are objects, so columns are addressed by their names rather than their positions."""
    norms = [norm_name(n) for n in names[:500]]
    found = {want: norms.index(norm_name(want)) for want in cols.extra if norm_name(want) in norms}

    def at(i: int) -> Any:
        return names[i] if keyed else i

    return Header(
        row,
        at(qi),
        None if ai is None else at(ai),
        str(names[qi]),
        None if ai is None else str(names[ai]),
        extra={want: at(i) for want, i in found.items()},
        extra_cols={want: str(names[i]) for want, i in found.items()},
    )


def _shown(names: Sequence[str | None]) -> str:
    cells = [n for n in names if n][:6]
    return ", ".join(repr(n if len(n) <= 30 else n[:27] + "...") for n in cells) or "nothing"


def no_columns_error(path: Path, cols: Columns, best: Sequence[str | None] | None, where: str = "") -> QatuneError:
    """The clearest message for a file whose question/answer columns could not be found."""
    if not best:
        wanted = "('Question', 'Answer')" if cols.answer_required else "('Question')"
        return QatuneError(f"no data found{where}; add a header row {wanted} and rows under it", path=path)
    qi, ai = match_header(best, cols)
    seen = f"(header cells seen: {_shown(best)})"
    if cols.strict and cols.question and qi is None:
        return QatuneError(f"no column named {cols.question!r}{where} {seen}; check --question-col", path=path)
    if not cols.answer_required:
        return QatuneError(
            f"no question column found{where} {seen}; name it 'Question' or pass --question-col", path=path
        )
    if cols.strict and cols.answer and ai is None:
        return QatuneError(f"no column named {cols.answer!r}{where} {seen}; check --answer-col", path=path)
    if qi is not None:
        return QatuneError(
            f"found the question column {best[qi]!r} but no answer column{where} {seen}; "
            "name it 'Answer' or pass --answer-col",
            path=path,
        )
    if ai is not None:
        return QatuneError(
            f"found the answer column {best[ai]!r} but no question column{where} {seen}; "
            "name it 'Question' or pass --question-col",
            path=path,
        )
    return QatuneError(
        f"no question/answer columns found{where} {seen}; name the columns 'Question' and "
        "'Answer' in a header row, or pass --question-col and --answer-col",
        path=path,
    )


def find_header(
    rows: Iterable[tuple[int, Sequence[Any]]],
    cols: Columns,
    convert: Converter,
) -> tuple[Header | None, list[str | None] | None]:
    """Scan the first rows for the header; also return the most promising row, for the error message.
    A row with both columns wins; without `answer_required` the first row with a question column is next."""
    best: list[str | None] | None = None
    best_score = -1
    question_only: Header | None = None
    for count, (rownum, cells) in enumerate(rows):
        if count >= HEADER_SCAN_ROWS:
            break
        names = [convert(c)[0] for c in cells[:500]]
        if not any(names):
            continue
        qi, ai = match_header(names, cols)
        if qi is not None and ai is not None:
            return make_header(rownum, names, qi, ai, cols), names
        if question_only is None and qi is not None and not cols.answer_required:
            question_only = make_header(rownum, names, qi, None, cols)
        score = (qi is not None) + (ai is not None)
        if score > best_score:
            best, best_score = names, score
    return question_only, best
