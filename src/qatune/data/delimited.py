"""CSV and TSV, streamed: each line is decoded as UTF-8 (a BOM is fine) with a Windows-1252 fallback per
line, so files that mix encodings still read; UTF-16 (Excel's "Unicode text") is read too. The delimiter
is the one under which the question/answer header is found."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from qatune.console import QatuneError
from qatune.data.header import HEADER_SCAN_ROWS, Columns, find_header, no_columns_error
from qatune.data.table import RowSink, Table, tabular_rows

LINE_LIMIT = 32 << 20
_FIELD_LIMIT = 64 << 20
_CHUNK = 1 << 20


def _convert(cell: Any) -> tuple[str | None, str | None]:
    return (cell or None), None


class TextLines:
    """Decoded lines of a text file; counts the lines that needed the fallback or held NUL bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.fallback_lines: list[int] = []
        self.nul_lines = 0

    def __iter__(self) -> Iterator[str]:
        self.fallback_lines, self.nul_lines = [], 0
        with open(self.path, "rb") as handle:
            head = handle.read(_CHUNK)
            handle.seek(0)
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                yield from self._clean(io.TextIOWrapper(handle, encoding="utf-16", errors="replace", newline=""))
                return
            sep = b"\r" if b"\r" in head and b"\n" not in head else b"\n"
            yield from self._clean(self._decode(_raw_lines(handle, sep)))

    def _decode(self, raw_lines: Iterator[bytes]) -> Iterator[str]:
        for number, raw in enumerate(raw_lines, 1):
            if len(raw) >= LINE_LIMIT and not raw.endswith(b"\n"):
                raise QatuneError(
                    f"line {number} is longer than {LINE_LIMIT >> 20} MiB; this is not a usable CSV file",
                    path=self.path,
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("cp1252", errors="replace")
                self.fallback_lines.append(number)
            yield line.removeprefix("\ufeff") if number == 1 else line

    def _clean(self, lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            if "\x00" in line:
                self.nul_lines += 1
                line = line.replace("\x00", "")
            yield line

    def notes(self) -> list[str]:
        notes = []
        if self.fallback_lines:
            n = len(self.fallback_lines)
            notes.append(
                f"{self.path.name}: {n} line(s) were not valid UTF-8 and were read as Windows-1252 "
                f"(first: line {self.fallback_lines[0]})"
            )
        if self.nul_lines:
            notes.append(f"{self.path.name}: removed NUL bytes from {self.nul_lines} line(s)")
        return notes


def _raw_lines(handle: IO[bytes], sep: bytes) -> Iterator[bytes]:
    if sep == b"\n":
        while raw := handle.readline(LINE_LIMIT):
            yield raw
        return
    buffer = b""
    while chunk := handle.read(_CHUNK):
        buffer += chunk
        *lines, buffer = buffer.split(sep)
        for line in lines:
            yield line + b"\n"
        if len(buffer) >= LINE_LIMIT:
            break
    if buffer:
        yield buffer


def _choose_delimiter(path: Path, cols: Columns, fmt: str) -> tuple[str, Any]:
    order = ["\t", ",", ";", "|"] if fmt == "tsv" else [",", ";", "\t", "|"]
    sample = list(itertools.islice(TextLines(path), HEADER_SCAN_ROWS * 4))
    first_best = None
    for delimiter in order:
        try:
            rows = enumerate(csv.reader(sample, delimiter=delimiter), 1)
            header, best = find_header(rows, cols, _convert)
        except csv.Error:
            continue
        if header is not None:
            return delimiter, header
        first_best = first_best or best
    raise no_columns_error(path, cols, first_best)


def read_delimited(path: Path, cols: Columns, *, sheet: str | None, max_rows: int, fmt: str) -> Table:
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    delimiter, header = _choose_delimiter(path, cols, fmt)
    lines = TextLines(path)
    reader = csv.reader(lines, delimiter=delimiter)
    sink = RowSink(path, max_rows)
    try:
        tabular_rows(sink, enumerate(reader, 1), header, _convert)
    except csv.Error as exc:
        raise QatuneError(
            f"cannot parse it as CSV near line {reader.line_num} ({exc}); check the quoting "
            "there, or re-export the file",
            path=path,
        ) from None
    return sink.table(fmt, header, notes=lines.notes())
