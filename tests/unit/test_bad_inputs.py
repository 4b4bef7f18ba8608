"""Bad input never crashes `qatune prepare`: named broken files through the real CLI entry point, and
property-based fuzzing of every reader. Each input ends in a correct result or one clear error line."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import random
import re
import struct
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qa_files import (
    ingest,
    rewrite_zip_member,
    run_cli,
    write_csv,
    write_json,
    write_jsonl,
    write_parquet,
    write_xlsx,
)

from qatune.console import QatuneError
from qatune.data.clean import clean_text

TRIED: Counter = Counter()
GOOD = [
    ["Question", "Answer"],
    ["What is the course code?", "DSC 310."],
    ["Who teaches it?", "Prof. Okafor."],
    ["When is the midterm?", "October 20."],
]


# ---- named broken files -------------------------------------------------------------------------------------


def _xlsx(tmp: Path, name: str = "good.xlsx") -> Path:
    return write_xlsx(tmp / name, GOOD)


def _truncated(tmp: Path, keep: float) -> Path:
    data = _xlsx(tmp).read_bytes()
    path = tmp / "truncated.xlsx"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _zip_bomb(tmp: Path) -> Path:
    path = _xlsx(tmp, "bomb.xlsx")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/image1.bin", bytes(100 << 20))
    return path


def _lying_sizes(tmp: Path) -> Path:
    """Central directory claims the sheet is 10 bytes: reading must not trust or crash on it."""
    path = _xlsx(tmp, "lying.xlsx")
    data = bytearray(path.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + length]) == name:
            struct.pack_into("<I", data, at + 24, 10)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _encrypted(tmp: Path) -> Path:
    from msoffcrypto.format.ooxml import OOXMLFile

    path = tmp / "locked.xlsx"
    with open(_xlsx(tmp), "rb") as src, open(path, "wb") as dst:
        OOXMLFile(src).encrypt("secret", dst)
    return path


_OLE = bytes.fromhex("d0cf11e0a1b11ae1")
# An encrypted .xls: its Workbook stream opens with a BIFF8 BOF record followed by a FilePass record.
_XLS_FILEPASS = bytes.fromhex("09081000 00060500") + bytes(12) + bytes.fromhex("2f003600 0100").ljust(512, b"\0")


def _bytes(name: str, data: bytes):
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return build


def _renamed(name: str, builder):
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(builder(tmp).read_bytes())
        return path

    return build


def _formulas(cached: bool):
    def build(tmp: Path) -> Path:
        path = _xlsx(tmp, "formulas.xlsx")
        value = b"<v>Stored result.</v>" if cached else b""
        return rewrite_zip_member(
            path,
            "xl/worksheets/sheet1.xml",
            lambda x: re.sub(
                rb'<c r="(B[234])" t="inlineStr"><is><t>[^<]*</t></is></c>',
                rb'<c r="\1" t="str"><f>CONCAT(A2,"!")</f>' + value + b"</c>",
                x,
            ),
        )

    return build


def _other_zip(tmp: Path) -> Path:
    path = tmp / "doc.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")
    return path


def _missing_workbook_part(tmp: Path) -> Path:
    path = tmp / "nopart.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return path


def _parquet(tmp: Path) -> Path:
    return write_parquet(
        tmp / "good.parquet", {"question": [r[0] for r in GOOD[1:]], "answer": [r[1] for r in GOOD[1:]]}
    )


def _parquet_types(tmp: Path) -> Path:
    import pyarrow as pa

    return write_parquet(
        tmp / "types.parquet",
        {
            "question": pa.array(["Credits?", "Start?", "Share?", "Tags?"]),
            "answer": pa.array([4, 2, 3, None], pa.int64()),
            "when": [dt.datetime(2026, 9, 1)] * 4,
        },
    )


def _truncated_parquet(tmp: Path) -> Path:
    path = tmp / "cut.parquet"
    path.write_bytes(_parquet(tmp).read_bytes()[:-40])
    return path


def _csv_text(name: str, text: str, encoding: str = "utf-8"):
    return _bytes(name, text.encode(encoding))


def _big_csv(rows: int, cell: int = 0):
    def build(tmp: Path) -> Path:
        path = tmp / f"rows{rows}.csv"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("Question,Answer\n")
            handle.writelines(f"Question {i}?,Answer {i}.\n" for i in range(rows))
            if cell:
                handle.write(f"Huge question?,{'word ' * (cell // 5)}\n")
        return path

    return build


def _huge_xlsx_cell(tmp: Path) -> Path:
    path = write_xlsx(tmp / "hugecell.xlsx", [["Question", "Answer"], ["Huge?", "y"]])
    return rewrite_zip_member(
        path, "xl/worksheets/sheet1.xml", lambda x: x.replace(b"<t>y</t>", b"<t>" + b"z " * (1 << 19) + b"</t>")
    )


def _merged(tmp: Path) -> Path:
    rows = [["Syllabus"], ["Question", "Answer"], ["Grading"], ["When is the lab?", "Fridays."], [None, "At 10 am."]]
    return write_xlsx(tmp / "merged.xlsx", rows, merges=["A1:B1", "A3:B3", "A4:A5"])


def _json(name: str, obj):
    return lambda tmp: write_json(tmp / name, obj)


OK = None
NAMED = [
    ("truncated xlsx (half)", lambda t: _truncated(t, 0.5), "damaged or truncated"),
    ("truncated xlsx (100 bytes)", lambda t: _truncated(t, 0.02), "damaged or truncated"),
    ("zip bomb xlsx", _zip_bomb, "zip bomb"),
    ("xlsx with lying sizes", _lying_sizes, "damaged"),
    ("password-protected xlsx", _encrypted, "password-protected"),
    ("old binary xls", _bytes("old.xls", _OLE.ljust(2048, b"\0")), "save it as .xlsx"),
    ("password-protected xls", _bytes("locked.xls", _OLE.ljust(1024, b"\0") + _XLS_FILEPASS), "password-protected"),
    (  # the directory entry's name split across two 1 MiB reads
        "encrypted xlsx, stream name past 1 MiB",
        _bytes("big.xlsx", _OLE.ljust((1 << 20) - 9, b"\0") + "EncryptedPackage".encode("utf-16-le")),
        "password-protected",
    ),
    ("xlsx named .csv", _renamed("data.csv", _xlsx), OK),
    ("xlsx named .xls", _renamed("data.xls", _xlsx), OK),
    ("csv named .xlsx", _csv_text("data.xlsx", "Question,Answer\nQ?,A.\n"), OK),
    ("parquet named .json", _renamed("data.json", _parquet), OK),
    ("json array named .jsonl", _json("arr.jsonl", [{"question": "Q?", "answer": "A."}]), OK),
    (
        "jsonl named .json",
        _csv_text("lines.json", '{"question": "Q1?", "answer": "A."}\n{"question": "Q2?", "answer": "B."}\n'),
        OK,
    ),
    ("unknown extension", _csv_text("data.txt", "Question,Answer\nQ?,A.\n"), "unsupported file type"),
    ("no extension", _csv_text("data", "Question,Answer\nQ?,A.\n"), "unsupported file type"),
    ("ods spreadsheet", _csv_text("data.ods", "not really"), "OpenDocument"),
    ("zip that is not a workbook", _other_zip, "not an Excel workbook"),
    ("workbook missing its parts", _missing_workbook_part, "cannot open the workbook"),
    ("empty file", _bytes("empty.csv", b""), "empty"),
    ("binary garbage", _bytes("garbage.csv", bytes(range(256)) * 20), "binary data"),
    ("cp1252 csv", _csv_text("win.csv", "Question,Answer\nCafé?,“Yes”.\n", "cp1252"), OK),
    (
        "mixed encodings",
        _bytes("mixed.csv", "Question,Answer\nCafé?,Oui.\n".encode() + "Naïve?,Non.\n".encode("cp1252")),
        OK,
    ),
    ("utf-16 tab text", _csv_text("u16.tsv", "Question\tAnswer\nQ?\tA.\n", "utf-16"), OK),
    ("NUL bytes", _bytes("nul.csv", b"Question,Answer\nQ\x00?,A.\x00\n\x00\n"), OK),
    ("1 MB cell csv", _big_csv(3, cell=1 << 20), OK),
    ("1 MB cell xlsx", _huge_xlsx_cell, OK),
    ("100k rows", _big_csv(100_000), OK),
    ("formulas with saved values", _formulas(True), OK),
    ("formulas without saved values", _formulas(False), "formula with no saved result"),
    ("merged cells", _merged, OK),
    ("only a header", lambda t: write_xlsx(t / "header.xlsx", [["Question", "Answer"]]), "no question/answer rows"),
    ("only one column", lambda t: write_csv(t / "one.csv", [["Question"], ["Q?"]]), "no answer column"),
    ("no header", lambda t: write_csv(t / "nohead.csv", [["1", "2"], ["3", "4"]]), "no question/answer columns"),
    (
        "no answers at all",
        lambda t: write_csv(t / "noans.csv", [["Question", "Answer"], ["Q?", ""], ["R?", " "]]),
        "no valid question/answer pairs",
    ),
    ("unbalanced quote", _csv_text("quote.csv", 'Question,Answer\n"Q?,A.\nR?,B.\n'), "no valid"),
    ("old Mac line endings", _bytes("mac.csv", b"Question,Answer\rQ?,A.\r"), OK),
    ("semicolon csv", _csv_text("semi.csv", "Question;Answer\nQ, really?;Yes.\n"), OK),
    ("JSON scalar", _json("scalar.json", 42), "found a number"),
    ("JSON list of strings", _json("strings.json", ["Q?", "A."]), "found a list of strings"),
    ("JSON empty list", _json("emptylist.json", []), "list is empty"),
    ("JSON object of several lists", _json("lists.json", {"a": [1], "b": [2]}), "several lists"),
    ("JSON object without a list", _json("nolist.json", {"a": 1}), "holds no list"),
    (
        "JSON columns of unequal length",
        _json("cols.json", {"question": ["Q?", "R?"], "answer": ["A."]}),
        "different lengths",
    ),
    ("JSON rows under a header", _json("rows.json", [["Question", "Answer"], ["Q?", "A."]]), OK),
    ("JSON with wrong keys", _json("keys.json", [{"title": "x", "body": "y"}]), "no question/answer columns"),
    ("invalid JSON", _csv_text("bad.json", '[{"question": "Q?", "answer": '), "not valid JSON"),
    ("deeply nested JSON", _csv_text("deep.json", "[" * 100_000 + "]" * 100_000), "JSON"),
    ("JSONL with garbage lines", _csv_text("some.jsonl", '{"question": "Q?", "answer": "A."}\n{oops\n[1]\n'), OK),
    ("JSONL of garbage only", _csv_text("none.jsonl", "{oops\nnope\n"), "no JSON objects"),
    ("parquet with other types", _parquet_types, OK),
    (
        "parquet without the columns",
        lambda t: write_parquet(t / "cols.parquet", {"x": [1], "y": [2]}),
        "no question/answer columns",
    ),
    ("truncated parquet", _truncated_parquet, "not a readable Parquet file"),
    ("a folder", lambda t: (t / "folder.csv").mkdir() or t / "folder.csv", "is a folder"),
    ("missing file", lambda t: t / "missing.xlsx", "file not found"),
]


@pytest.mark.parametrize("name,build,expect", NAMED, ids=[n for n, _, _ in NAMED])
def test_named_bad_input(tmp_path, capsys, monkeypatch, name, build, expect):
    src = tmp_path / "src"
    src.mkdir()
    path = build(src)
    run = tmp_path / "run"
    code, out, err = run_cli(["prepare", path, "--out", run, "--quiet"], capsys, monkeypatch)
    TRIED["named"] += 1
    assert "Traceback" not in err + out
    if expect is OK:
        assert code == 0, err
        report = json.loads((run / "data" / "report.json").read_text())
        assert report["valid_pairs"] >= 1
    else:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {path}") and re.search(expect, lines[0]), lines[0]
        assert not (run / "data").exists()


def test_row_limit_and_sheet_errors_through_the_cli(tmp_path, capsys, monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text("prepare:\n  max_rows: 100\n")
    data = _big_csv(500)(tmp_path)
    code, _, err = run_cli(["prepare", data, "--out", tmp_path / "r", "--config", config], capsys, monkeypatch)
    assert code == 2 and "more than 100 data rows" in err and "prepare.max_rows" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(
        ["prepare", _xlsx(tmp_path), "--out", tmp_path / "r", "--sheet", "Nope"], capsys, monkeypatch
    )
    assert code == 2 and "no sheet named 'Nope'" in err and len(err.splitlines()) == 1
    TRIED["named"] += 2


def test_large_and_odd_files_give_the_right_warnings(tmp_path):
    _, cleaned = ingest(_big_csv(3, cell=1 << 20)(tmp_path))
    from qatune.data.clean import length_warnings

    assert "rows 5" in length_warnings(cleaned.pairs, "no/model", 512)[0]
    table, _ = ingest(_renamed("data.csv", _xlsx)(tmp_path))
    assert table.notes == ["data.csv is named .csv but is an Excel workbook; it was read as such"]
    table, cleaned = ingest(_merged(tmp_path))
    assert [(p["source_row"], p["question"]) for p in cleaned.pairs] == [
        (4, "When is the lab?"),
        (5, "When is the lab?"),
    ]
    assert cleaned.dropped == [{"row": 3, "reason": "empty answer"}]


# ---- property-based fuzzing -----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("QATUNE_FUZZ_EXAMPLES", "70")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
SPECIAL = st.sampled_from(
    [
        "",
        " ",
        "\u00a0",
        "\x00",
        "=SUM(A1:A2)",
        "#N/A",
        "Question",
        "answer",
        "\ufeff",
        "a\r\nb",
        '"',
        "'",
        ";",
        "\t",
        "nan",
        "None",
        "[1, 2]",
        "{}",
        "\u202e",
        "🙂",
    ]
)
TEXT = st.one_of(st.text(max_size=40), SPECIAL, st.text(alphabet=" \t\n\r\x00\u00a0ab,;\"'", max_size=20))
VALUE = st.one_of(
    st.none(), TEXT, st.integers(-(10**20), 10**20), st.floats(), st.booleans(), st.dates(min_value=dt.date(1900, 1, 1))
)
ROWS = st.lists(st.tuples(VALUE, VALUE), max_size=12)


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def _read_as(value, true: str = "TRUE", false: str = "FALSE") -> tuple[str | None, bool]:
    """What a correct reader makes of a typed cell: (its text, or None when empty; True when unusable)."""
    if value is None or isinstance(value, str):
        return value, False
    if isinstance(value, bool):
        return (true if value else false), False
    if isinstance(value, int):
        return str(value), False
    if isinstance(value, float):
        if math.isnan(value):
            return None, False
        if math.isinf(value):
            return None, True
        return (str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)), False
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), False
        except UnicodeDecodeError:
            return None, True
    return value.isoformat(), False  # a date


# (row, question text, answer text, unusable): each written row as a correct reader gives it
Expected = list[tuple[int, str | None, str | None, bool]]


def _expected_outcome(expected: Expected) -> tuple[list[tuple[int, str, str]], set[int]]:
    """The pairs (row order, cleaned text, first of each exact duplicate) and the rows dropped with a reason."""
    pairs, dropped, seen = [], set(), set()
    for row, q, a, unusable in expected:
        if unusable:
            dropped.add(row)
            continue
        q, a = clean_text(q or ""), clean_text(a or "", multiline=True)
        if not q and not a:
            continue
        if not q or not a or (q, a) in seen:
            dropped.add(row)
            continue
        seen.add((q, a))
        pairs.append((row, q, a))
    return pairs, dropped


def _check(path: Path, written: int, expected: Expected | None = None) -> None:
    """Ingestion ends in pairs or a QatuneError naming the file; pairs map back to their rows. A well-formed
    file (`expected` given) is read exactly: the pairs are its rows' values, in order, under their row
    numbers, every other non-blank row is dropped, and it is refused only when it holds no valid pair."""
    try:
        table, cleaned = ingest(path)
    except QatuneError as exc:
        assert str(exc).startswith(str(path))
        if expected is not None:
            assert not _expected_outcome(expected)[0], f"a well-formed file was refused: {exc}"
        return
    rows = [p["source_row"] for p in cleaned.pairs] + [d["row"] for d in cleaned.dropped]
    assert len(rows) == len(set(rows)) and len(rows) + cleaned.blank_rows <= written
    for pair in cleaned.pairs:
        assert pair["question"] and pair["answer"] and pair["question"] == pair["question"].strip()
    if expected is not None:
        pairs, dropped = _expected_outcome(expected)
        assert [(p["source_row"], p["question"], p["answer"]) for p in cleaned.pairs] == pairs
        assert {d["row"] for d in cleaned.dropped} == dropped, cleaned.dropped


@FUZZ
@given(rows=ROWS)
def test_fuzz_csv_cells(tmp_path, rows):
    TRIED["csv"] += 1
    # Control bytes other than NUL, tab, line breaks and ESC are dropped: a short text file full of them is
    # refused as binary by design (the random-bytes fuzzing covers those files).
    texts = [tuple(None if v is None else _CONTROL.sub("", v) for v in (_as_text(q), _as_text(a))) for q, a in rows]
    path = write_csv(tmp_path / "f.csv", [["Question", "Answer"]] + [[q or "", a or ""] for q, a in texts])
    _check(path, len(rows), [(i + 2, q, a, False) for i, (q, a) in enumerate(texts)])


@FUZZ
@given(rows=ROWS)
def test_fuzz_xlsx_cells(tmp_path, rows):
    from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE

    TRIED["xlsx"] += 1

    def cell(value):
        if isinstance(value, str):
            return ILLEGAL_CHARACTERS_RE.sub("", value)
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
            return str(value)
        return value

    def formula(value) -> bool:  # openpyxl stores such text as a formula, saved without a result
        return isinstance(value, str) and len(value) > 1 and value.startswith("=")

    def stored(value):  # what the file holds: a formula's (missing) result; floats to 16 significant digits
        if formula(value):
            return None
        return float(f"{value:.16g}") if isinstance(value, float) else value

    cells = [(cell(q), cell(a)) for q, a in rows]
    path = write_xlsx(tmp_path / "f.xlsx", [["Question", "Answer"]] + [list(c) for c in cells])
    expected = []
    for i, (q, a) in enumerate(cells):
        (qt, q_bad), (at, a_bad) = _read_as(stored(q)), _read_as(stored(a))
        # a formula beside a filled cell is named as such; text such as "#N/A" is stored as a spreadsheet error;
        # a float stored to 16 digits can round past the largest double and read back as infinite
        unusable = (formula(q) and bool(at)) or (formula(a) and bool(qt)) or q in ERROR_CODES or a in ERROR_CODES
        unusable = unusable or q_bad or a_bad
        expected.append((i + 2, qt, at, unusable))
    _check(path, len(rows), expected)


@FUZZ
@given(rows=ROWS, wrap=st.booleans())
def test_fuzz_json_values(tmp_path, rows, wrap):
    TRIED["json"] += 1
    items = [{"question": q, "answer": a} for q, a in rows]
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"items": items} if wrap else items, default=str), encoding="utf-8")
    _check(path, len(rows), _json_expected(rows))


def _json_expected(rows: list[tuple]) -> Expected:
    """JSON keeps strings, numbers and true/false; dates were written as their text."""
    expected = []
    for i, (q, a) in enumerate(rows):
        (qt, q_bad), (at, a_bad) = (_read_as(str(v) if isinstance(v, dt.date) else v, "true", "false") for v in (q, a))
        expected.append((i + 1, qt, at, q_bad or a_bad))
    return expected


@FUZZ
@given(rows=ROWS)
def test_fuzz_jsonl_records(tmp_path, rows):
    TRIED["jsonl"] += 1
    lines = [json.loads(json.dumps({"question": q, "answer": a}, default=str)) for q, a in rows]
    path = write_jsonl(tmp_path / "f.jsonl", lines)
    _check(path, len(rows), _json_expected(rows))


@FUZZ
@given(
    objs=st.lists(
        st.one_of(
            st.fixed_dictionaries({"question": VALUE, "answer": VALUE}),
            st.dictionaries(TEXT, VALUE, max_size=3),
            VALUE,
            st.lists(VALUE, max_size=2),
        ),
        max_size=12,
    )
)
def test_fuzz_jsonl_lines(tmp_path, objs):
    TRIED["jsonl"] += 1
    path = write_jsonl(tmp_path / "f.jsonl", [json.loads(json.dumps(o, default=str)) for o in objs])
    _check(path, len(objs))


@FUZZ
@given(kind=st.sampled_from(["string", "int", "float", "bool", "date", "binary"]), data=st.data())
def test_fuzz_parquet_columns(tmp_path, kind, data):
    import pyarrow as pa

    TRIED["parquet"] += 1
    values = {
        "string": TEXT,
        "int": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(),
        "bool": st.booleans(),
        "date": st.dates(),
        "binary": st.binary(max_size=10),
    }[kind]
    column = st.lists(st.one_of(st.none(), values), min_size=1, max_size=12)
    questions = data.draw(column)
    answers = data.draw(st.lists(st.one_of(st.none(), TEXT), min_size=len(questions), max_size=len(questions)))
    path = write_parquet(tmp_path / "f.parquet", {"question": pa.array(questions), "answer": pa.array(answers)})
    expected = []
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        (qt, q_bad), (at, a_bad) = _read_as(q, "true", "false"), _read_as(a)
        expected.append((i + 1, qt, at, q_bad or a_bad))
    _check(path, len(questions), expected)


@FUZZ
@given(ext=st.sampled_from([".xlsx", ".csv", ".tsv", ".json", ".jsonl", ".parquet"]), data=st.binary(max_size=600))
def test_fuzz_random_bytes(tmp_path, ext, data):
    TRIED["bytes"] += 1
    path = tmp_path / f"r{ext}"
    path.write_bytes(data)
    _check(path, 10**6)


def _good_files(tmp: Path) -> dict[str, bytes]:
    return {
        ".xlsx": _xlsx(tmp).read_bytes(),
        ".parquet": _parquet(tmp).read_bytes(),
        ".json": json.dumps([{"question": q, "answer": a} for q, a in GOOD[1:]]).encode(),
        ".csv": io.BytesIO("\n".join(",".join(r) for r in GOOD).encode()).getvalue(),
    }


@FUZZ
@given(
    ext=st.sampled_from([".xlsx", ".parquet", ".json", ".csv"]),
    seed=st.integers(0, 2**32),
    how=st.sampled_from(["truncate", "flip", "insert", "zero"]),
)
def test_fuzz_mutated_valid_files(tmp_path, ext, seed, how):
    TRIED["mutated"] += 1
    rng = random.Random(seed)
    data = bytearray(_good_files(tmp_path)[ext])
    at = rng.randrange(len(data))
    if how == "truncate":
        data = data[:at]
    elif how == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    else:
        data[at : at + 64] = bytes(min(64, len(data) - at))
    path = tmp_path / f"m{ext}"
    path.write_bytes(bytes(data))
    _check(path, 10**6)


@FUZZ
@given(
    member=st.sampled_from(
        [
            "xl/worksheets/sheet1.xml",
            "xl/workbook.xml",
            "xl/styles.xml",
            "[Content_Types].xml",
            "xl/_rels/workbook.xml.rels",
        ]
    ),
    seed=st.integers(0, 2**32),
    junk=st.sampled_from(
        [b"<", b">", b"&", b'<c r="ZZZ0">', b"</row>", b"\x00", b"<v>1e999</v>", b'<mergeCell ref="A1:XFD1048576"/>']
    ),
)
def test_fuzz_workbook_xml(tmp_path, member, seed, junk):
    """Valid zip, damaged XML inside: the parts openpyxl parses while streaming."""
    TRIED["xml"] += 1
    rng = random.Random(seed)

    def damage(xml: bytes) -> bytes:
        at = rng.randrange(len(xml))
        return xml[:at] + junk + xml[at + rng.randint(0, 20) :] if rng.random() < 0.8 else xml[:at]

    path = rewrite_zip_member(_xlsx(tmp_path, "x.xlsx"), member, damage)
    _check(path, 10**6)


def test_fuzz_corpus_size():
    """The figure reported for the bad-input corpus (only meaningful when the whole module ran)."""
    fuzz = ["csv", "xlsx", "json", "jsonl", "parquet", "bytes", "mutated", "xml"]
    if any(TRIED[k] == 0 for k in fuzz + ["named"]):
        pytest.skip("run the whole module to count the corpus")
    total = sum(TRIED.values())
    print(f"bad-input corpus: {total} inputs tried ({dict(TRIED)})")
    assert total >= 300
