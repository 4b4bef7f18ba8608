"""Excel workbooks (.xlsx/.xlsm), streamed with openpyxl in read-only mode: formulas give their saved
values, merged cells take their top-left value, percent formats stay percentages, and the sheet that holds
the question/answer columns is the one read."""

from __future__ import annotations

import contextlib
import re
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.data.header import Columns, Header, find_header, no_columns_error
from qatune.data.sniff import check_zip
from qatune.data.table import RawRow, RowSink, Table, tabular_rows, to_text

_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\s[^>]*?ref="([A-Za-z]{1,3}\d{1,7}):([A-Za-z]{1,3}\d{1,7})"')
MAX_MERGED = 100_000
_RESAVE = "open and re-save it in a spreadsheet app, or export it to .csv"
_NO_RESULT = (
    "is a formula with no saved result; open and save the workbook in Excel or LibreOffice so the results are stored"
)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def cell_text(cell: Any) -> tuple[str | None, str | None]:
    value = getattr(cell, "value", None)
    if value is None:
        return None, None
    if getattr(cell, "data_type", None) == "e":
        return None, f"is a spreadsheet error ({value})"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "%" in (getattr(cell, "number_format", None) or ""):
            text, _ = to_text(round(float(value) * 100, 10))
            return f"{text}%", None
    return to_text(value)


@contextlib.contextmanager
def _workbook(path: Path, data_only: bool = True) -> Iterator[Any]:
    """The workbook opened read-only from a file handle, so a wrong extension does not matter."""
    import openpyxl

    with open(path, "rb") as handle:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wb = openpyxl.load_workbook(handle, read_only=True, data_only=data_only, keep_links=False)
        except Exception as exc:  # openpyxl raises many types for a damaged workbook
            raise QatuneError(
                f"cannot open the workbook ({_short(exc)}); it may be damaged: {_RESAVE}", path=path
            ) from None
        try:
            yield wb
        finally:
            wb.close()


def _choose_sheet(wb: Any, path: Path, cols: Columns, sheet: str | None) -> tuple[Any, Header]:
    sheets = [ws for ws in wb.worksheets if hasattr(ws, "iter_rows")]
    titles = ", ".join(repr(ws.title) for ws in sheets[:10])
    if sheet is not None:
        chosen = [ws for ws in sheets if ws.title == sheet] or [
            ws for ws in sheets if ws.title.strip().casefold() == sheet.strip().casefold()
        ]
        if not chosen:
            raise QatuneError(f"no sheet named {sheet!r} (sheets: {titles}); check --sheet", path=path)
        sheets = chosen[:1]
    best: list[str | None] | None = None
    for ws in sheets:
        ws.reset_dimensions()
        header, seen = find_header(enumerate(ws.iter_rows(), 1), cols, cell_text)
        if header is not None:
            return ws, header
        best = best or seen
    where = f" in sheet {sheets[0].title!r}" if len(sheets) == 1 else f" in any sheet ({titles})"
    raise no_columns_error(path, cols, best, where=where)


def _merged_ranges(path: Path, ws: Any) -> list[tuple[int, int, int, int]]:
    """Merged ranges of a sheet, found by scanning its XML (read-only mode does not expose them)."""
    from openpyxl.utils.cell import range_boundaries

    name = str(getattr(ws, "_worksheet_path", "")).lstrip("/")
    found: set[tuple[bytes, bytes]] = set()
    with zipfile.ZipFile(path) as archive:
        if name not in archive.namelist():
            return []
        with archive.open(name) as stream:
            tail = b""
            while chunk := stream.read(1 << 20):
                buffer = tail + chunk
                found.update(m.groups() for m in _MERGE.finditer(buffer))
                tail = buffer[-256:]
                if len(found) > MAX_MERGED:
                    return []
    return [range_boundaries(f"{a.decode()}:{b.decode()}") for a, b in found]


def _fill_merged(
    rows: Iterator[tuple[int, Sequence[Any]]], ranges: list[tuple[int, int, int, int]], columns: set[int]
) -> Iterator[tuple[int, Sequence[Any]]]:
    """A cell merged down a column that is read repeats the top cell's value in every row it spans.
    Merges across columns (section titles) are not copied sideways."""
    starts: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for c0, r0, _, r1 in ranges:
        if c0 - 1 in columns and r1 > r0:
            starts[r0].append((c0 - 1, r0, r1))
    active: list[tuple[int, int, Any]] = []  # (column, last row, top cell)
    for rownum, cells in rows:
        active = [entry for entry in active if entry[1] >= rownum]
        if active:
            cells = list(cells)
            for col, _, top in active:
                cells.extend([None] * (col + 1 - len(cells)))
                cells[col] = top
        for col, _, r1 in starts.get(rownum, ()):
            active.append((col, r1, cells[col] if col < len(cells) else None))
        yield rownum, cells


def _mark_formulas(path: Path, title: str, header: Header, rows: list[RawRow]) -> None:
    """Rows with one empty cell: if that cell holds a formula, say so instead of 'empty'."""
    if header.ai is None:  # a file of questions: a row without its question is blank
        return
    suspects = {r.row: r for r in rows if r.problem is None and (r.question is None) != (r.answer is None)}
    if not suspects or len(suspects) > 50_000:
        return
    with _workbook(path, data_only=False) as wb:
        ws = wb[title]
        ws.reset_dimensions()
        last = max(suspects)
        for rownum, cells in enumerate(ws.iter_rows(max_row=last), 1):
            raw = suspects.get(rownum)
            if raw is None:
                continue
            for role, index, text in (("question", header.qi, raw.question), ("answer", header.ai, raw.answer)):
                value = getattr(cells[index], "value", None) if index < len(cells) else None
                if text is None and isinstance(value, str) and value.startswith("="):
                    raw.problem = f"{role} {_NO_RESULT}"


def read_workbook(path: Path, cols: Columns, *, sheet: str | None, max_rows: int, fmt: str) -> Table:
    check_zip(path)
    sink = RowSink(path, max_rows)
    last = [0]

    def counted(rows: Iterator[tuple[int, Sequence[Any]]]) -> Iterator[tuple[int, Sequence[Any]]]:
        for item in rows:
            last[0] = item[0]
            yield item

    with _workbook(path) as wb, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ws, header = _choose_sheet(wb, path, cols, sheet)
            ranges = _merged_ranges(path, ws)
            rows = counted(enumerate(ws.iter_rows(), 1))
            read = {header.qi, header.ai, *header.extra.values()} - {None}
            tabular_rows(sink, _fill_merged(rows, ranges, read), header, cell_text)
            _mark_formulas(path, ws.title, header, sink.rows)
        except QatuneError:
            raise
        except Exception as exc:  # a part of the workbook that fails to parse mid-way
            raise QatuneError(
                f"the workbook is damaged near row {last[0]} ({_short(exc)}); {_RESAVE}", path=path
            ) from None
    return sink.table("xlsx", header, sheet=ws.title)
