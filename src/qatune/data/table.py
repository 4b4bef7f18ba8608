"""What every format reader shares: the Table of raw rows (with spreadsheet row numbers), cell-to-text
conversion and the RowSink that enforces the size limits. Header detection lives in header.py."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.data.header import Converter, Header


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
