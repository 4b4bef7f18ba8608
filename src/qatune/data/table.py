"""What every format reader shares: the Table of raw rows (with spreadsheet row numbers), cell-to-text
conversion and the RowSink that enforces the size limits. Header detection lives in header.py."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from qatune.console import QatuneError
from qatune.data.header import Converter, Header

NO_EXTRA: Mapping[str, str | None] = MappingProxyType({})  # shared by rows without extra columns: no dict per row


@dataclass
class RawRow:
    row: int
    question: str | None
    answer: str | None
    problem: str | None = None  # why the row cannot be used, when the reader already knows
    # the extra columns asked for, by the name asked: only those the file has; None for an empty cell
    extra: Mapping[str, str | None] = field(default_factory=lambda: NO_EXTRA)


@dataclass
class Table:
    path: Path
    format: str
    rows: list[RawRow]
    question_col: str
    answer_col: str | None  # None: a file of questions without an answer column
    header_row: int | None = None
    sheet: str | None = None
    blank_rows: int = 0
    notes: list[str] = field(default_factory=list)
    extra_cols: dict[str, str] = field(default_factory=dict)  # extra columns found: asked-for name -> name in the file


MAX_TEXT_CHARS = 256 << 20


class RowSink:
    """Collects data rows, skips the ones with neither a question nor an answer (whatever their extra cells hold),
    and enforces the row and text limits while streaming."""

    def __init__(self, path: Path, max_rows: int):
        self.path, self.max_rows = path, max_rows
        self.rows: list[RawRow] = []
        self.blank = 0
        self.chars = 0

    def add(
        self,
        row: int,
        question: Any,
        answer: Any,
        convert: Converter,
        problem: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        q, q_problem = convert(question)
        a, a_problem = convert(answer)
        if problem is None and (q_problem or a_problem):
            problem = f"question {q_problem}" if q_problem else f"answer {a_problem}"
        texts = NO_EXTRA
        if extra:
            texts = found = {}
            for name, value in extra.items():
                found[name], why = convert(value)
                if problem is None and why:
                    problem = f"{name} {why}"
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
        if texts:
            self.chars += sum(len(t or "") for t in texts.values())
        if self.chars > MAX_TEXT_CHARS:
            raise QatuneError(
                f"holds more than {MAX_TEXT_CHARS >> 20} million characters of questions and "
                "answers, far more than fine-tuning can use; split the file",
                path=self.path,
                row=row,
            )
        self.rows.append(RawRow(row, q, a, problem, texts))

    def table(self, fmt: str, header: Header, **more: Any) -> Table:
        """The collected rows as a Table read with `header` (`more`: sheet, notes)."""
        return Table(
            path=self.path,
            format=fmt,
            rows=self.rows,
            question_col=header.question_col,
            answer_col=header.answer_col,
            header_row=header.row,
            blank_rows=self.blank,
            extra_cols=dict(header.extra_cols),
            **more,
        )


def tabular_rows(sink: RowSink, rows: Iterable[tuple[int, Sequence[Any]]], header: Header, convert: Converter) -> None:
    """Feed the data rows under `header` into the sink."""
    qi, ai, extra_at = header.qi, header.ai, header.extra
    for rownum, cells in rows:
        if header.row is not None and rownum <= header.row:
            continue
        n = len(cells)
        answer = cells[ai] if ai is not None and ai < n else None
        extra = {name: cells[i] if i < n else None for name, i in extra_at.items()} if extra_at else None
        sink.add(rownum, cells[qi] if qi < n else None, answer, convert, extra=extra)


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
