"""Builders for the data files the data tests ingest (written under tmp_path), and an in-process CLI runner."""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest


def write_xlsx(
    path: Path,
    rows: list[list[Any]],
    title: str = "Sheet1",
    more: dict[str, list[list[Any]]] | None = None,
    merges: list[str] | None = None,
    formats: dict[str, str] | None = None,
) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    sheets = {title: rows, **(more or {})}
    for i, (name, content) in enumerate(sheets.items()):
        ws = wb.active if i == 0 else wb.create_sheet()
        ws.title = name
        for r, row in enumerate(content, 1):
            for c, value in enumerate(row, 1):
                if value is not None:
                    ws.cell(r, c, value)
        if i == 0:
            for ref in merges or []:
                ws.merge_cells(ref)
            for ref, fmt in (formats or {}).items():
                ws[ref].number_format = fmt
    wb.save(path)
    return path


def write_csv(path: Path, rows: list[list[Any]], delimiter: str = ",", encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()})
    pq.write_table(table, path)
    return path


def rewrite_zip_member(path: Path, member: str, transform) -> Path:
    """Rewrite one part of a zip (e.g. a sheet's XML) in place."""
    with zipfile.ZipFile(path) as src:
        parts = {info.filename: src.read(info) for info in src.infolist()}
    parts[member] = transform(parts[member])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in parts.items():
            dst.writestr(name, data)
    return path


def ingest(path: Path, **kwargs: Any):
    """read_table + clean_rows, the way prepare does it."""
    from qatune.data.clean import clean_rows
    from qatune.data.read import read_table

    table = read_table(path, **kwargs)
    return table, clean_rows(table.rows, blank_rows=table.blank_rows)


def pairs_of(path: Path, **kwargs: Any) -> list[tuple[int, str, str]]:
    _, cleaned = ingest(path, **kwargs)
    return [(p["source_row"], p["question"], p["answer"]) for p in cleaned.pairs]


def run_cli(
    args: list[Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    """Run `qatune ARGS` in-process through the same entry point as the console script."""
    from qatune import cli, console

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["qatune", *[str(a) for a in args]])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        console.set_quiet(False)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
