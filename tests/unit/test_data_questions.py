"""Files of questions without answers (answer_required=False) and extra columns such as `answerable`, read
from real files of every format and cleaned into pairs."""

from __future__ import annotations

import pytest
from qa_files import write_csv, write_json, write_jsonl, write_parquet, write_xlsx

from qatune.config import Config
from qatune.console import QatuneError
from qatune.data.clean import clean_rows, parse_answerable
from qatune.data.prepare import load_questions
from qatune.data.read import read_table
from qatune.data.table import RawRow

QUESTIONS = ["What is the course code?", "Who teaches it?", "When is the midterm?"]
FORMATS = ["xlsx", "csv", "tsv", "json", "json-columns", "json-rows", "jsonl", "parquet"]


def _write(tmp_path, kind: str, columns: dict[str, list]) -> tuple:
    """`columns` written as a file of `kind`; returns (path, row number of the first data row)."""
    names = list(columns)
    rows = [list(values) for values in zip(*columns.values(), strict=True)]
    records = [dict(zip(names, row, strict=True)) for row in rows]
    if kind == "xlsx":
        return write_xlsx(tmp_path / "q.xlsx", [names, *rows]), 2
    if kind in ("csv", "tsv"):
        text_rows = [["" if v is None else str(v) for v in row] for row in rows]
        return write_csv(tmp_path / f"q.{kind}", [names, *text_rows], "\t" if kind == "tsv" else ","), 2
    if kind == "json":
        return write_json(tmp_path / "q.json", records), 1
    if kind == "json-columns":
        return write_json(tmp_path / "q.json", columns), 1
    if kind == "json-rows":
        return write_json(tmp_path / "q.json", [names, *rows]), 2
    if kind == "jsonl":
        return write_jsonl(tmp_path / "q.jsonl", records), 1
    return write_parquet(tmp_path / "q.parquet", columns), 1


@pytest.mark.parametrize("kind", FORMATS)
def test_a_file_of_questions_reads_in_every_format(tmp_path, kind):
    path, first = _write(tmp_path, kind, {"Question": QUESTIONS, "Notes": ["a", "b", "c"]})
    table = read_table(path, answer_required=False)
    assert (table.question_col, table.answer_col) == ("Question", None)
    assert [(r.row, r.question, r.answer) for r in table.rows] == [
        (first + i, q, None) for i, q in enumerate(QUESTIONS)
    ]
    cleaned = clean_rows(table.rows, id_prefix="q", answer_required=False)
    assert [(p["id"], p["question"], p["answer"]) for p in cleaned.pairs] == [
        (f"q-{first + i}", q, "") for i, q in enumerate(QUESTIONS)
    ]
    assert not cleaned.dropped
    with pytest.raises(QatuneError) as caught:
        read_table(path)  # answers are still required by default
    if kind != "json-columns":  # there: two lists and none of question/answer objects
        assert "found the question column 'Question' but no answer column" in str(caught.value)


@pytest.mark.parametrize("kind", ["xlsx", "csv", "json", "jsonl", "parquet"])
def test_a_file_of_questions_without_a_question_column_names_what_it_saw(tmp_path, kind):
    path, _ = _write(tmp_path, kind, {"Topic": ["exams", "grading"], "Notes": ["note 1", "note 2"]})
    with pytest.raises(QatuneError) as caught:
        read_table(path, answer_required=False)
    message = str(caught.value)
    assert message.startswith(f"{path}: no question column found")
    assert "'Topic', 'Notes'" in message and message.endswith("name it 'Question' or pass --question-col")
    assert "\n" not in message


def test_answers_are_read_when_a_file_of_questions_has_them(tmp_path):
    rows = [["Questions about the course"], [], ["Question", "Answer"], ["Q1?", "A1."], ["Q2?", ""]]
    path = write_xlsx(tmp_path / "q.xlsx", rows)
    table = read_table(path, answer_required=False)
    assert (table.header_row, table.answer_col) == (3, "Answer")  # the full header wins over the title row
    cleaned = clean_rows(table.rows, answer_required=False)
    assert [(p["source_row"], p["answer"]) for p in cleaned.pairs] == [(4, "A1."), (5, "")]


def test_header_row_with_only_a_question_column_below_a_title(tmp_path):
    path = write_csv(tmp_path / "q.csv", [["Course FAQ"], [], ["Question"], ["Q1?"], [""], ["Q2?"]])
    table = read_table(path, answer_required=False)
    assert table.header_row == 3 and table.blank_rows == 1
    assert [(r.row, r.question) for r in table.rows] == [(4, "Q1?"), (6, "Q2?")]


ANSWERABLE = {
    "Question": ["Q1?", "Q2?", "Q3?", "Q4?", "Q5?", "Q6?", "Q7?"],
    "Answer": ["A1.", None, "A3.", None, "A5.", "A6.", None],
    "Answerable": ["yes", "No", "TRUE", "0", None, "maybe", "y"],
}


@pytest.mark.parametrize("kind", FORMATS)
def test_answerable_column_in_every_format(tmp_path, kind):
    path, first = _write(tmp_path, kind, ANSWERABLE)
    table = read_table(path, extra_columns=("answerable", "difficulty"))
    assert table.extra_cols == {"answerable": "Answerable"}  # no difficulty column
    assert [r.extra for r in table.rows][:5] == [
        {"answerable": "yes"},
        {"answerable": "No"},
        {"answerable": "TRUE"},
        {"answerable": "0"},
        {"answerable": None},
    ]
    cleaned = clean_rows(table.rows, label="test file: ")
    got = [(p["source_row"] - first, p["question"], p["answer"], p["answerable"]) for p in cleaned.pairs]
    assert got == [
        (0, "Q1?", "A1.", True),
        (1, "Q2?", "", False),  # unanswerable: no answer needed
        (2, "Q3?", "A3.", True),
        (3, "Q4?", "", False),
        (4, "Q5?", "A5.", True),  # an empty cell means answerable
    ]
    assert [(d["row"] - first, d["reason"]) for d in cleaned.dropped] == [
        (5, "test file: answerable 'maybe': use yes or no (or true/false, 1/0, y/n)"),
        (6, "test file: empty answer"),  # answerable, so its answer is required
    ]


def test_answerable_from_typed_cells_and_spreadsheet_errors(tmp_path):
    rows = [
        ["Question", "Answer", "ANSWERABLE"],
        ["Q1?", "A1.", True],
        ["Q2?", None, False],
        ["Q3?", "A3.", 1],
        ["Q4?", None, 0],
        ["Q5?", "A5.", "#N/A"],
    ]
    path = write_xlsx(tmp_path / "q.xlsx", rows)
    table = read_table(path, extra_columns=("answerable",))
    cleaned = clean_rows(table.rows)
    assert [(p["source_row"], p["answerable"]) for p in cleaned.pairs] == [(2, True), (3, False), (4, True), (5, False)]
    assert cleaned.dropped == [{"row": 6, "reason": "answerable is a spreadsheet error (#N/A)"}]


def test_parse_answerable():
    for text in ("yes", "Yes", " TRUE ", "1", "y", "Y", "", None):
        assert parse_answerable(text) is True, text
    for text in ("no", "NO", "false", "False", "0", "n", " N "):
        assert parse_answerable(text) is False, text
    for text in ("maybe", "2", "yes please", "-"):
        assert parse_answerable(text) is None, text


def _rows(*items):
    return [RawRow(row, q, a, None, extra) for row, q, a, extra in items]


def test_clean_rows_without_required_answers_keeps_empty_answers_and_text_extras():
    rows = _rows(
        (2, "Q1?", None, {"topic": " grading "}),
        (3, " Q1? ", "", {"topic": None}),
        (4, "Q2?", "A2.", {"topic": "exams"}),
        (5, None, "A3.", {"topic": "x"}),
        (6, None, None, {"topic": "only a topic"}),
    )
    out = clean_rows(rows, answer_required=False)
    assert out.pairs == [
        {"id": "row-2", "question": "Q1?", "answer": "", "source_row": 2, "topic": "grading"},
        {"id": "row-4", "question": "Q2?", "answer": "A2.", "source_row": 4, "topic": "exams"},
    ]
    assert out.dropped == [{"row": 3, "reason": "duplicate of row 2"}, {"row": 5, "reason": "empty question"}]
    assert out.blank_rows == 1
    same = clean_rows(rows)  # answers required: as before, plus the extra fields
    assert [p["source_row"] for p in same.pairs] == [4]
    assert [d["reason"] for d in same.dropped] == ["empty answer", "empty answer", "empty question"]


def test_rows_without_extras_clean_exactly_as_before():
    rows = [RawRow(2, "Q?", "A.", None), RawRow(3, "Q2?", "", None)]
    out = clean_rows(rows)
    assert out.pairs == [{"id": "row-2", "question": "Q?", "answer": "A.", "source_row": 2}]
    assert out.dropped == [{"row": 3, "reason": "empty answer"}]


def test_columns_of_lists_need_one_value_per_question(tmp_path):
    path = write_json(tmp_path / "q.json", {"question": ["Q1?", "Q2?"], "answerable": ["no"]})
    with pytest.raises(QatuneError, match=r"columns 'question' and 'answerable' have different lengths \(2 and 1\)"):
        read_table(path, answer_required=False, extra_columns=("answerable",))


def test_load_questions_passes_the_options_through(tmp_path):
    path = write_csv(tmp_path / "q.csv", [["Question", "Answerable"], ["Q1?", "no"], ["Q2?", ""], ["Q3?", "maybe"]])
    rows = load_questions(path, Config(), answer_required=False, extra_columns=("answerable",))
    assert rows == [
        {"id": "q-2", "question": "Q1?", "answer": "", "source_row": 2, "answerable": False},
        {"id": "q-3", "question": "Q2?", "answer": "", "source_row": 3, "answerable": True},
    ]
    with pytest.raises(QatuneError, match="found the question column 'Question' but no answer column"):
        load_questions(path, Config())
    empty = write_csv(tmp_path / "e.csv", [["Question", "Answerable"], ["", "no"]])
    with pytest.raises(QatuneError, match=r"e\.csv: no questions under the header in row 1; add rows with a question"):
        load_questions(empty, Config(), answer_required=False)
