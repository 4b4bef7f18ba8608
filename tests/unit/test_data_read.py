"""Reading every supported format into rows with spreadsheet row numbers; header and column detection."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pytest
from qa_files import (
    ingest,
    pairs_of,
    rewrite_zip_member,
    write_csv,
    write_json,
    write_jsonl,
    write_parquet,
    write_xlsx,
)

from qatune.console import QatuneError
from qatune.data.read import read_table

PAIRS = [
    ("What is the course code?", "DSC 310."),
    ("Who teaches it?", "Prof. Imani Okafor."),
    ("When is the midterm?", "October 20, 2026."),
]


def test_seed_workbook_yields_exactly_100_pairs(seed_dir):
    table, cleaned = ingest(seed_dir / "QA_pair.xlsx")
    assert (table.sheet, table.question_col, table.answer_col, table.header_row) == ("Sheet1", "Question", "Answer", 1)
    assert len(cleaned.pairs) == 100 and not cleaned.dropped
    assert [p["source_row"] for p in cleaned.pairs] == list(range(2, 102))
    assert cleaned.pairs[0]["question"] == "What is the title of this course?"  # trailing spaces gone


def _expected(first_row: int) -> list[tuple[int, str, str]]:
    return [(first_row + i, q, a) for i, (q, a) in enumerate(PAIRS)]


@pytest.mark.parametrize(
    "kind", ["xlsx", "xlsm", "csv", "tsv", "json", "json-wrapped", "json-columns", "json-rows", "jsonl", "parquet"]
)
def test_every_format_gives_the_same_pairs(tmp_path, kind):
    header = [["Question", "Answer"]]
    rows = [list(p) for p in PAIRS]
    records = [{"question": q, "answer": a, "extra": 1} for q, a in PAIRS]
    if kind in ("xlsx", "xlsm"):
        path, first = write_xlsx(tmp_path / f"d.{kind}", header + rows), 2
    elif kind in ("csv", "tsv"):
        path, first = write_csv(tmp_path / f"d.{kind}", header + rows, "\t" if kind == "tsv" else ","), 2
    elif kind == "json":
        path, first = write_json(tmp_path / "d.json", records), 1
    elif kind == "json-wrapped":
        path, first = write_json(tmp_path / "d.json", {"version": 2, "data": records}), 1
    elif kind == "json-columns":
        path, first = (
            write_json(tmp_path / "d.json", {"question": [q for q, _ in PAIRS], "answer": [a for _, a in PAIRS]}),
            1,
        )
    elif kind == "json-rows":
        path, first = write_json(tmp_path / "d.json", header + rows), 2
    elif kind == "jsonl":
        path, first = write_jsonl(tmp_path / "d.jsonl", records), 1
    else:
        path, first = (
            write_parquet(tmp_path / "d.parquet", {"prompt": [q for q, _ in PAIRS], "response": [a for _, a in PAIRS]}),
            1,
        )
    assert pairs_of(path) == _expected(first)


@pytest.mark.parametrize(
    "names",
    [
        ("Prompt", "Response"),
        ("instruction", "output"),
        ("  QUESTION ", "answer  "),
        ("Student Question", "Answer (short)"),
        ("Q", "A"),
        ("query", "completion"),
        ("input", "reply"),
        ("question_text", "reference_answer"),
    ],
)
def test_header_names_are_found_case_and_space_insensitively(tmp_path, names):
    path = write_csv(tmp_path / "d.csv", [["id", *names, "notes"], ["1", "Q1?", "A1.", "x"]])
    table = read_table(path)
    assert (table.question_col, table.answer_col) == names
    assert pairs_of(path) == [(2, "Q1?", "A1.")]


def test_alpaca_style_prefers_instruction_over_input(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Q?", "input": "", "output": "A."}])
    table = read_table(path)
    assert (table.question_col, table.answer_col) == ("instruction", "output")


def test_header_below_title_rows_and_explicit_columns(tmp_path):
    rows = [["DSC 310 FAQ"], [], ["Frage", "Antwort", "Thema"], ["Wann?", "Dienstag.", "x"]]
    path = write_xlsx(tmp_path / "t.xlsx", rows)
    with pytest.raises(QatuneError, match="no question/answer columns found"):
        read_table(path)
    table = read_table(path, question_col="frage", answer_col="ANTWORT")
    assert table.header_row == 3 and pairs_of(path, question_col="Frage", answer_col="Antwort") == [
        (4, "Wann?", "Dienstag.")
    ]
    with pytest.raises(QatuneError, match="no column named 'Fragen'.*--question-col"):
        read_table(path, question_col="Fragen", answer_col="Antwort")


def test_workbook_sheet_holding_the_columns_is_chosen(tmp_path):
    path = write_xlsx(
        tmp_path / "s.xlsx",
        [["Notes about the course"], ["nothing here"]],
        title="Notes",
        more={"Data": [["Question", "Answer"], ["Q?", "A."]], "Other": [["question", "answer"]]},
    )
    table = read_table(path)
    assert table.sheet == "Data" and [(r.row, r.question) for r in table.rows] == [(2, "Q?")]
    assert read_table(path, sheet="other").sheet == "Other"
    with pytest.raises(QatuneError, match=r"no sheet named 'Missing' \(sheets: 'Notes', 'Data', 'Other'\)"):
        read_table(path, sheet="Missing")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "utf-16"])
def test_csv_encodings(tmp_path, encoding):
    path = write_csv(
        tmp_path / "e.csv", [["Question", "Answer"], ["Où est le café?", "It’s in Hall 214 — “B”."]], encoding=encoding
    )
    assert pairs_of(path) == [(2, "Où est le café?", "It’s in Hall 214 — “B”.")]


def test_csv_with_mixed_encodings_reads_each_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("Question,Answer\nCafé?,Oui.\n".encode() + "Naïve?,Non.\n".encode("cp1252"))
    table, cleaned = ingest(path)
    assert [(p["question"], p["answer"]) for p in cleaned.pairs] == [("Café?", "Oui."), ("Naïve?", "Non.")]
    assert any("Windows-1252" in n and "line 3" in n for n in table.notes)


def test_csv_semicolons_nul_bytes_and_old_mac_line_endings(tmp_path):
    semi = write_csv(tmp_path / "s.csv", [["Question", "Answer"], ["Q, really?", "A; yes."]], delimiter=";")
    assert pairs_of(semi) == [(2, "Q, really?", "A; yes.")]
    nul = tmp_path / "n.csv"
    nul.write_bytes(b"Question,Answer\nQ\x00?,A\x00.\n")
    table, cleaned = ingest(nul)
    assert cleaned.pairs[0]["question"] == "Q?" and any("NUL" in n for n in table.notes)
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b"Question,Answer\rQ1?,A1.\rQ2?,A2.\r")
    assert pairs_of(mac) == [(2, "Q1?", "A1."), (3, "Q2?", "A2.")]


def test_csv_row_numbers_count_records_not_lines(tmp_path):
    path = tmp_path / "ml.csv"
    path.write_text('Question,Answer\n"Q1?","line one\nline two"\n\nQ2?,A2.\n', encoding="utf-8")
    assert pairs_of(path) == [(2, "Q1?", "line one\nline two"), (4, "Q2?", "A2.")]


def _with_formula(xml: bytes, cached: bool) -> bytes:
    value = b"<v>CACHED ANSWER</v>" if cached else b""
    old = b'<c r="B2" t="inlineStr"><is><t>placeholder</t></is></c>'
    assert old in xml
    return xml.replace(old, b'<c r="B2" t="str"><f>UPPER(A2)</f>' + value + b"</c>")


@pytest.mark.parametrize("cached", [True, False])
def test_formulas_give_their_saved_values(tmp_path, cached):
    path = write_xlsx(tmp_path / "f.xlsx", [["Question", "Answer"], ["Q?", "placeholder"], ["Q2?", "A2."]])
    rewrite_zip_member(path, "xl/worksheets/sheet1.xml", lambda x: _with_formula(x, cached))
    _, cleaned = ingest(path)
    if cached:
        assert cleaned.pairs[0]["answer"] == "CACHED ANSWER"
    else:
        assert cleaned.dropped == [
            {
                "row": 2,
                "reason": "answer is a formula with no saved result; open and "
                "save the workbook in Excel or LibreOffice so the results are stored",
            }
        ]


def test_merged_cells_fill_down_but_not_sideways(tmp_path):
    rows = [["Question", "Answer"], ["Grading", None], ["When is the lab?", "Fridays."], [None, "10:00 am."]]
    path = write_xlsx(tmp_path / "m.xlsx", rows, merges=["A2:B2", "A3:A4"])
    _, cleaned = ingest(path)
    assert [(p["source_row"], p["question"], p["answer"]) for p in cleaned.pairs] == [
        (3, "When is the lab?", "Fridays."),
        (4, "When is the lab?", "10:00 am."),
    ]
    assert cleaned.dropped == [{"row": 2, "reason": "empty answer"}]


def test_workbook_values_become_text_sensibly(tmp_path):
    rows = [
        ["Question", "Answer"],
        ["Midterm share?", 0.2],
        ["Credits?", 4],
        ["Weight?", 2.5],
        ["Date?", dt.datetime(2026, 10, 20)],
        ["Start?", dt.datetime(2026, 9, 1, 14, 0)],
        ["Time?", dt.time(14, 0)],
        ["Open?", True],
        [12, "Twelve."],
    ]
    path = write_xlsx(tmp_path / "v.xlsx", rows, formats={"B2": "0%"})
    answers = [(q, a) for _, q, a in pairs_of(path)]
    assert answers == [
        ("Midterm share?", "20%"),
        ("Credits?", "4"),
        ("Weight?", "2.5"),
        ("Date?", "2026-10-20"),
        ("Start?", "2026-09-01 14:00"),
        ("Time?", "14:00"),
        ("Open?", "TRUE"),
        ("12", "Twelve."),
    ]


def test_spreadsheet_error_cells_are_dropped_with_the_reason(tmp_path):
    path = write_xlsx(tmp_path / "e.xlsx", [["Question", "Answer"], ["Q?", "placeholder"]])
    rewrite_zip_member(
        path,
        "xl/worksheets/sheet1.xml",
        lambda x: x.replace(
            b'<c r="B2" t="inlineStr"><is><t>placeholder</t></is></c>', b'<c r="B2" t="e"><v>#DIV/0!</v></c>'
        ),
    )
    _, cleaned = ingest(path)
    assert cleaned.dropped == [{"row": 2, "reason": "answer is a spreadsheet error (#DIV/0!)"}]


def test_parquet_with_other_types(tmp_path):
    import pyarrow as pa

    path = write_parquet(
        tmp_path / "t.parquet",
        {
            "question": pa.array([1, 2, 3, 4, 5, 6, 7]),
            "answer": pa.array([1.5, 2.0, None, 4.0, 5.0, 6.0, 7.0]),
        },
    )
    assert [(r, q, a) for r, q, a in pairs_of(path)] == [
        (1, "1", "1.5"),
        (2, "2", "2"),
        (4, "4", "4"),
        (5, "5", "5"),
        (6, "6", "6"),
        (7, "7", "7"),
    ]
    path = write_parquet(
        tmp_path / "u.parquet",
        {
            "question": pa.array([b"bytes?", b"\xff\xfe", b"date?", b"list?", b"dec?"]),
            "answer": pa.array([{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}, {"x": 5}]),
        },
    )
    _, cleaned = ingest(path)
    obj = "answer is an object, not text"
    assert [d["reason"] for d in cleaned.dropped] == [obj, "question is binary data, not text", obj, obj, obj]
    path = write_parquet(
        tmp_path / "w.parquet",
        {
            "question": ["date?", "when?"],
            "answer": pa.array([None, None], pa.null()),
            "when": [dt.date(2026, 1, 2), dt.date(2026, 3, 4)],
            "stamp": [dt.datetime(2026, 1, 2, 9, 30), dt.datetime(2026, 1, 2)],
        },
    )
    _, cleaned = ingest(path)
    assert not cleaned.pairs and [d["reason"] for d in cleaned.dropped] == ["empty answer"] * 2
    assert pairs_of(path, answer_col="when") == [(1, "date?", "2026-01-02"), (2, "when?", "2026-03-04")]
    assert pairs_of(path, answer_col="stamp") == [(1, "date?", "2026-01-02 09:30"), (2, "when?", "2026-01-02")]
    mixed = write_parquet(
        tmp_path / "x.parquet",
        {
            "question": ["dec?", "ts?", "ok?", "list?"],
            "answer": pa.array([[1], [2], [3], [4]]),
        },
    )
    _, cleaned = ingest(mixed)
    assert {d["reason"] for d in cleaned.dropped} == {"answer is a list, not text"}
    decimals = write_parquet(tmp_path / "d.parquet", {"question": ["price?"], "answer": [Decimal("12.50")]})
    assert pairs_of(decimals) == [(1, "price?", "12.50")]


def test_jsonl_bad_lines_are_dropped_by_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"question": "Q1?", "answer": "A1."}),
        "{broken",
        "",
        "[1, 2]",
        json.dumps({"question": "Q2?", "answer": 7}),
        json.dumps({"question": "Q3?", "answer": [1]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, cleaned = ingest(path)
    assert [(p["source_row"], p["answer"]) for p in cleaned.pairs] == [(1, "A1."), (5, "7")]
    assert [(d["row"], d["reason"].split(" (")[0]) for d in cleaned.dropped] == [
        (2, "line is not valid JSON"),
        (4, "line is a list, not an object"),
        (6, "answer is a list, not text"),
    ]


def test_row_limit_is_enforced_while_streaming(tmp_path):
    rows = [["Question", "Answer"]] + [[f"Q{i}?", f"A{i}."] for i in range(50)]
    for path in (
        write_csv(tmp_path / "r.csv", rows),
        write_xlsx(tmp_path / "r.xlsx", rows),
        write_parquet(
            tmp_path / "r.parquet", {"question": [r[0] for r in rows[1:]], "answer": [r[1] for r in rows[1:]]}
        ),
    ):
        assert len(read_table(path, max_rows=50).rows) == 50
        with pytest.raises(QatuneError, match="more than 49 data rows|more than the prepare.max_rows limit"):
            read_table(path, max_rows=49)


def test_100k_rows_and_1mb_cells(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("Question,Answer\n")
        handle.writelines(f"Question number {i}?,Answer {i}.\n" for i in range(100_000))
        handle.write(f"Huge?,{'x' * (1 << 20)}\n")
    start = time.perf_counter()
    table = read_table(path)
    elapsed = time.perf_counter() - start
    assert len(table.rows) == 100_001 and table.rows[-1].row == 100_002
    assert len(table.rows[-1].answer) == 1 << 20
    assert elapsed < 20
    huge = write_xlsx(tmp_path / "huge.xlsx", [["Question", "Answer"], ["Huge?", "y"]])  # openpyxl cuts at 32767
    rewrite_zip_member(
        huge, "xl/worksheets/sheet1.xml", lambda x: x.replace(b"<t>y</t>", b"<t>" + b"y" * (1 << 20) + b"</t>")
    )
    assert len(read_table(huge).rows[0].answer) == 1 << 20


def test_a_data_row_mentioning_questions_is_not_taken_for_a_header(tmp_path):
    rows = [["What is the question about?", "The answer is the syllabus."], ["Question", "Answer"], ["Q?", "A."]]
    path = write_csv(tmp_path / "d.csv", rows)
    assert read_table(path).header_row == 2 and pairs_of(path) == [(3, "Q?", "A.")]


def test_total_text_is_bounded(tmp_path, monkeypatch):
    from qatune.data import table

    monkeypatch.setattr(table, "MAX_TEXT_CHARS", 1000)
    path = write_csv(tmp_path / "t.csv", [["Question", "Answer"]] + [[f"Q{i}?", "x" * 100] for i in range(20)])
    with pytest.raises(QatuneError, match=r"t.csv, row 11: holds more than"):
        read_table(path)
