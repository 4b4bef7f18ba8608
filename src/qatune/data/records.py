"""Record files: JSON (a list of objects, an object holding one such list, columns of lists, or rows as
lists under a header), JSON Lines (streamed) and Parquet (streamed in batches). Row numbers are item
numbers (JSON, Parquet) or line numbers (JSON Lines)."""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.data.delimited import TextLines
from qatune.data.header import Columns, Header, enough, find_header, make_header, match_header, no_columns_error
from qatune.data.table import RowSink, Table, tabular_rows, to_text

MAX_JSON_BYTES = 256 << 20
_KEY_SCAN = 200
_SHAPE = 'expected a list of objects like [{"question": "...", "answer": "..."}]'


def _json_text(value: Any) -> tuple[str | None, str | None]:
    return to_text(value, true="true", false="false")


def _records_header(path: Path, cols: Columns, objects: list[dict]) -> Header:
    keys = list(dict.fromkeys(str(k) for obj in objects[:_KEY_SCAN] for k in obj))
    qi, ai = match_header(keys, cols)
    if qi is None or not enough(qi, ai, cols):
        raise no_columns_error(path, cols, keys, where=" among the object keys")
    return make_header(None, keys, qi, ai, cols, keyed=True)


def _decode(raw: bytes) -> tuple[str, str | None]:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), None
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), "not valid UTF-8; read as Windows-1252"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


def _pick_list(path: Path, data: dict, cols: Columns) -> list:
    """The one list an object holds (or the one whose objects have question/answer keys)."""
    keys = list(data)
    qi, ai = match_header(keys, cols)
    if qi is not None and enough(qi, ai, cols):
        q, a = data[keys[qi]], (data[keys[ai]] if ai is not None else None)
        if isinstance(q, list) and (ai is None or isinstance(a, list)):
            return _zip_columns(path, data, make_header(None, keys, qi, ai, cols, keyed=True))
        if not isinstance(q, list | dict) and not isinstance(a, list | dict):
            return [data]
    lists = [(k, v) for k, v in data.items() if isinstance(v, list)]
    if len(lists) > 1:
        fitting = [
            (k, v)
            for k, v in lists
            if any(isinstance(o, dict) and enough(*match_header(list(o), cols), cols) for o in v[:_KEY_SCAN])
        ]
        lists = fitting if fitting else lists
    if len(lists) == 1:
        return lists[0][1]
    if not lists:
        raise QatuneError(f"the JSON object holds no list; {_SHAPE}", path=path)
    names = ", ".join(repr(k) for k, _ in lists[:5])
    raise QatuneError(
        f"the JSON object holds several lists ({names}); keep only the list of question/answer objects", path=path
    )


def _zip_columns(path: Path, data: dict, header: Header) -> list[dict]:
    """Columns of lists -> one object per row: the question column, the answer and extra columns that are lists."""
    keys = [header.qi, header.ai, *header.extra.values()]
    columns = {k: data[k] for k in keys if k is not None and isinstance(data[k], list)}
    size = len(columns[header.qi])
    for key, values in columns.items():
        if len(values) != size:
            what = "answer" if key == header.ai else "value"
            raise QatuneError(
                f"columns {header.qi!r} and {key!r} have different lengths "
                f"({size} and {len(values)}); give one {what} per question",
                path=path,
            )
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def read_json(path: Path, cols: Columns, *, sheet: str | None, max_rows: int, fmt: str) -> Table:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise QatuneError(
            f"is {size >> 20} MiB, too large to load as one JSON document; convert it to JSON "
            "Lines (.jsonl, one object per line)",
            path=path,
        )
    text, note = _decode(path.read_bytes())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QatuneError(
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix it or export the data again",
            path=path,
        ) from None
    except RecursionError:
        raise QatuneError(f"the JSON is nested too deeply to be question/answer data; {_SHAPE}", path=path) from None
    items = _pick_list(path, data, cols) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise QatuneError(f"{_SHAPE}, found {_kind(items)}", path=path)
    first = next((item for item in items if item is not None), None)
    if first is None:
        raise QatuneError(f"the JSON list is empty; {_SHAPE}", path=path)
    sink = RowSink(path, max_rows)
    if isinstance(first, list):
        header, best = find_header(enumerate(items, 1), cols, _json_text)
        if header is None:
            raise no_columns_error(path, cols, best, where=" in the first rows of the JSON list")
        rows = ((i, item if isinstance(item, list) else []) for i, item in enumerate(items, 1))
        tabular_rows(sink, rows, header, _json_text)
    elif isinstance(first, dict):
        header = _records_header(path, cols, [o for o in items[:_KEY_SCAN] if isinstance(o, dict)])
        for number, item in enumerate(items, 1):
            _add_record(sink, number, item, header, "item")
    else:
        plural = {"a string": "strings", "a number": "numbers"}.get(_kind(first), "true/false values")
        raise QatuneError(f"{_SHAPE}, found a list of {plural}", path=path)
    notes = [f"{path.name}: {note}"] if note else []
    return sink.table("json", header, notes=notes)


def _add_record(sink: RowSink, number: int, item: Any, header: Header, what: str) -> None:
    if item is None:
        sink.blank += 1
    elif isinstance(item, dict):
        extra = {name: item.get(key) for name, key in header.extra.items()} if header.extra else None
        answer = item.get(header.ai) if header.ai is not None else None
        sink.add(number, item.get(header.qi), answer, _json_text, extra=extra)
    else:
        sink.add(number, None, None, _json_text, problem=f"{what} is {_kind(item)}, not an object")


def _jsonl_items(lines: TextLines) -> Iterator[tuple[int, Any, str | None]]:
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield number, json.loads(line), None
        except (json.JSONDecodeError, RecursionError) as exc:
            yield number, None, f"line is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})"


def read_jsonl(path: Path, cols: Columns, *, sheet: str | None, max_rows: int, fmt: str) -> Table:
    scan = [
        obj for _, obj, _ in itertools.islice(_jsonl_items(TextLines(path)), _KEY_SCAN * 5) if isinstance(obj, dict)
    ][:_KEY_SCAN]
    if not scan:
        raise QatuneError(
            'no JSON objects found; each line must be an object like {"question": "...", "answer": "..."}', path=path
        )
    header = _records_header(path, cols, scan)
    lines = TextLines(path)
    sink = RowSink(path, max_rows)
    for number, obj, problem in _jsonl_items(lines):
        if problem:
            sink.add(number, None, None, _json_text, problem=problem)
        else:
            _add_record(sink, number, obj, header, "line")
    return sink.table("jsonl", header, notes=lines.notes())


def read_parquet(path: Path, cols: Columns, *, sheet: str | None, max_rows: int, fmt: str) -> Table:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        detail = " ".join(str(exc).split())[:120]
        raise QatuneError(f"is not a readable Parquet file ({detail}); export it again", path=path) from None
    names = list(parquet.schema_arrow.names)
    qi, ai = match_header(names, cols)
    if qi is None or not enough(qi, ai, cols):
        raise no_columns_error(path, cols, names, where=" among the Parquet columns")
    header = make_header(None, names, qi, ai, cols, keyed=True)
    if parquet.metadata.num_rows > max_rows:
        raise QatuneError(
            f"has {parquet.metadata.num_rows:,} rows, more than the prepare.max_rows limit of "
            f"{max_rows:,}; split the file, or raise prepare.max_rows in a --config file",
            path=path,
        )
    sink = RowSink(path, max_rows)
    wanted = list(dict.fromkeys(k for k in (header.qi, header.ai, *header.extra.values()) if k is not None))
    number = 0
    for batch in parquet.iter_batches(batch_size=8192, columns=wanted):
        values = {key: batch.column(i).to_pylist() for i, key in enumerate(wanted)}
        questions, answers = values[header.qi], values.get(header.ai) or [None] * batch.num_rows
        columns = {name: values[key] for name, key in header.extra.items()}
        for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
            number += 1
            extra = {name: column[i] for name, column in columns.items()} if columns else None
            sink.add(number, q, a, _json_text, extra=extra)
    return sink.table("parquet", header)
