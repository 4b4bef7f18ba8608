"""What every format reader shares: the Table of raw rows (with spreadsheet row numbers), header and
question/answer column detection, cell-to-text conversion and the RowSink that enforces the size limits."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
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


@dataclass
class RawRow:
    row: int
    question: str | None
    answer: str | None
    problem: str | None = None  # why the row cannot be used, when the reader already knows


@dataclass
class Table:
    path: Path
    format: str
    rows: list[RawRow]
    question_col: str
    answer_col: str
    header_row: int | None = None
    sheet: str | None = None
    blank_rows: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Columns:
    """Column names asked for; `strict` makes a given name mandatory rather than a first preference."""

    question: str | None = None
    answer: str | None = None
    strict: bool = True


@dataclass(frozen=True)
class Header:
    row: int | None
    qi: Any  # column index (tabular) or key (records)
    ai: Any
    question_col: str
    answer_col: str


Converter = Callable[[Any], tuple[str | None, str | None]]


def norm_name(value: object) -> str:
    return re.sub(r"[\W_]+", "", str(value).casefold()) if value is not None else ""


def _words(value: object) -> set[str]:
    return set(re.split(r"[\W_]+", str(value).casefold())) - {""}


def _find(
    names: Sequence[str], wanted: str | None, strict: bool, aliases: tuple[str, ...], words: set[str], other: set[str]
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


def _shown(names: Sequence[str | None]) -> str:
    cells = [n for n in names if n][:6]
    return ", ".join(repr(n if len(n) <= 30 else n[:27] + "...") for n in cells) or "nothing"


def no_columns_error(path: Path, cols: Columns, best: Sequence[str | None] | None, where: str = "") -> QatuneError:
    """The clearest message for a file whose question/answer columns could not be found."""
    if not best:
        return QatuneError(
            f"no data found{where}; add a header row ('Question', 'Answer') and rows under it", path=path
        )
    qi, ai = match_header(best, cols)
    seen = f"(header cells seen: {_shown(best)})"
    if cols.strict and cols.question and qi is None:
        return QatuneError(f"no column named {cols.question!r}{where} {seen}; check --question-col", path=path)
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
    """Scan the first rows for the header; also return the most promising row, for the error message."""
    best: list[str | None] | None = None
    best_score = -1
    for count, (rownum, cells) in enumerate(rows):
        if count >= HEADER_SCAN_ROWS:
            break
        names = [convert(c)[0] for c in cells[:500]]
        if not any(names):
            continue
        qi, ai = match_header(names, cols)
        if qi is not None and ai is not None:
            return Header(rownum, qi, ai, str(names[qi]), str(names[ai])), names
        score = (qi is not None) + (ai is not None)
        if score > best_score:
            best, best_score = names, score
    return None, best


MAX_TEXT_CHARS = 256 << 20


class RowSink:
    """Collects data rows, skips fully empty ones, and enforces the row and text limits while streaming."""

    def __init__(self, path: Path, max_rows: int):
        self.path, self.max_rows = path, max_rows
        self.rows: list[RawRow] = []
        self.blank = 0
        self.chars = 0

    def add(self, row: int, question: Any, answer: Any, convert: Converter, problem: str | None = None) -> None:
        q, q_problem = convert(question)
        a, a_problem = convert(answer)
        if problem is None and (q_problem or a_problem):
            problem = f"question {q_problem}" if q_problem else f"answer {a_problem}"
        if problem is None and not q and not a:
            self.blank += 1
            return
        if len(self.rows) >= self.max_rows:
            raise QatuneError(
                f"has more than {self.max_rows:,} data rows (the prepare.max_rows limit); "
                "split the file, or raise prepare.max_rows in a --config file",
                path=self.path,
            )
        self.chars += len(q or "") + len(a or "")
        if self.chars > MAX_TEXT_CHARS:
            raise QatuneError(
                f"holds more than {MAX_TEXT_CHARS >> 20} million characters of questions and "
                "answers, far more than fine-tuning can use; split the file",
                path=self.path,
                row=row,
            )
        self.rows.append(RawRow(row, q, a, problem))

    def table(self, fmt: str, header: Header, **extra: Any) -> Table:
        """The collected rows as a Table read with `header` (`extra`: sheet, notes)."""
        return Table(
            path=self.path,
            format=fmt,
            rows=self.rows,
            question_col=header.question_col,
            answer_col=header.answer_col,
            header_row=header.row,
            blank_rows=self.blank,
            **extra,
        )


def tabular_rows(sink: RowSink, rows: Iterable[tuple[int, Sequence[Any]]], header: Header, convert: Converter) -> None:
    """Feed the data rows under `header` into the sink."""
    qi, ai = header.qi, header.ai
    for rownum, cells in rows:
        if header.row is not None and rownum <= header.row:
            continue
        n = len(cells)
        sink.add(rownum, cells[qi] if qi < n else None, cells[ai] if ai < n else None, convert)


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def to_text(value: Any, true: str = "TRUE", false: str = "FALSE") -> tuple[str | None, str | None]:
    """A cell value as text (numbers and dates written sensibly), or (None, why it is not usable)."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return (true if value else false), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if math.isnan(value):
            return None, None
        return (_number(value), None) if math.isfinite(value) else (None, "is not a finite number")
    if isinstance(value, Decimal):
        return (None, None) if value.is_nan() else (format(value, "f"), None)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat(), None
        return value.isoformat(sep=" ", timespec="minutes" if value.second == 0 else "seconds"), None
    if isinstance(value, dt.date):
        return value.isoformat(), None
    if isinstance(value, dt.time):
        return value.isoformat(timespec="minutes" if value.second == 0 else "seconds"), None
    if isinstance(value, dt.timedelta):
        return str(value), None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError:
            return None, "is binary data, not text"
    if isinstance(value, dict):
        return None, "is an object, not text"
    if isinstance(value, list | tuple | set):
        return None, "is a list, not text"
    return str(value), None
