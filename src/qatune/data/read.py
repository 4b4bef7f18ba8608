"""Files -> raw question/answer rows, each with the row number a spreadsheet app shows.

Picks the format reader (xlsx.py, delimited.py, records.py) from the extension, checked against the content;
header detection lives in header.py, the Table type in table.py. Any failure ends in a QatuneError naming the file."""

from __future__ import annotations

from pathlib import Path

from qatune.console import QatuneError
from qatune.data import delimited, records, xlsx
from qatune.data.header import Columns
from qatune.data.sniff import detect_format
from qatune.data.table import Table


def read_table(
    path: Path,
    *,
    question_col: str | None = None,
    answer_col: str | None = None,
    sheet: str | None = None,
    max_rows: int = 200_000,
    strict: bool = True,
    answer_required: bool = True,
    extra_columns: tuple[str, ...] = (),
) -> Table:
    """Read `path` into raw rows; the format comes from the extension, checked against the content.

    Without `answer_required` a file with a question column and no answer column is read too (a file of
    questions; answers are then None). `extra_columns` are read as text into each row's `extra` when the
    file has them (matched like the header names); `Table.extra_cols` says which were found."""
    path = Path(path)
    fmt, note = detect_format(path)
    cols = Columns(question_col, answer_col, strict, answer_required, tuple(extra_columns))
    try:
        table = _read_as(fmt, path, cols, sheet, max_rows)
    except QatuneError:
        if note is None or fmt not in ("json", "jsonl") or path.suffix.lower() not in (".csv", ".tsv"):
            raise
        fmt, note = path.suffix.lower()[1:], None
        table = _read_as(fmt, path, cols, sheet, max_rows)
    if note:
        table.notes.insert(0, note)
    if sheet and fmt != "xlsx":
        table.notes.append(f"--sheet {sheet!r} ignored: {path.name} is not a workbook")
    return table


def _read_as(fmt: str, path: Path, cols: Columns, sheet: str | None, max_rows: int) -> Table:
    readers = {
        "xlsx": xlsx.read_workbook,
        "csv": delimited.read_delimited,
        "tsv": delimited.read_delimited,
        "json": records.read_json,
        "jsonl": records.read_jsonl,
        "parquet": records.read_parquet,
    }
    try:
        return readers[fmt](path, cols, sheet=sheet, max_rows=max_rows, fmt=fmt)
    except QatuneError:
        raise
    except MemoryError:
        raise QatuneError("ran out of memory reading the file; split it into smaller files", path=path) from None
    except Exception as exc:  # a damaged file must end in one clear line, never a traceback
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise QatuneError(
            f"cannot read it as {fmt} ({detail}); check that it opens in a spreadsheet app, or export it to .csv",
            path=path,
        ) from exc
