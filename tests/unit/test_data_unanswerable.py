"""The `unanswerable` eval set and the refusal questions that prepare writes: the user's file (bad ones end in one
line naming the file and row, exit 2, nothing written), the example's own set, or a generated one that never holds a
test question; refusal questions never as close to an evaluated question as a near duplicate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qa_files import run_cli, write_csv, write_xlsx

from qatune.data.clean import question_key
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

PAIRS = [
    ["Question", "Answer"],
    ["Who teaches DSC 310?", "Prof. Imani Okafor teaches DSC 310."],
    ["When is the midterm?", "The midterm is on October 20, 2026."],
    ["What is covered in week 1?", "Week 1 covers the machine learning workflow."],
    ["Where are the lectures held?", "The lectures are held in Whitfield Hall 214."],
    ["How much is the homework worth?", "Homework counts for 30% of the final grade."],
    ["Is there a final exam?", "No, there is no final exam; the final project replaces it."],
]
TEST = [["Question", "Answer"], ["Who is the instructor of DSC 310?", "Prof. Imani Okafor teaches DSC 310."]]


def _prepare(tmp_path: Path, capsys, monkeypatch, *extra) -> tuple[int, str, Path]:
    data = write_xlsx(tmp_path / "faq.xlsx", PAIRS)
    test = write_csv(tmp_path / "test.csv", TEST)
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["prepare", data, "--out", run, "--test", test, "--augment", "0", "--quiet", *extra], capsys, monkeypatch
    )
    return code, err, run


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["Question"]], "no questions under the header"),
        ([["Topic", "Notes"], ["grading", "curve?"]], "no question column found"),
        ([["Question"], ["Is there a curve?"], ["Who teaches DSC 310?"]], "row 3: asks a question the data answers"),
    ],
)
def test_a_bad_unanswerable_file_is_one_line_naming_file_and_row(tmp_path, capsys, monkeypatch, rows, message):
    bad = write_csv(tmp_path / "unknown.csv", rows)
    code, err, run = _prepare(tmp_path, capsys, monkeypatch, "--unanswerable", bad)
    assert code == 2
    assert err.count("\n") == 1 and "unknown.csv" in err and message in err, err
    assert not RunDir(run).data_dir.exists()  # nothing written


def test_the_users_file_is_the_eval_set_and_refusal_questions_stay_apart(tmp_path, capsys, monkeypatch):
    mine = write_csv(
        tmp_path / "unknown.csv",
        [
            ["Question", "Answer", "Kind"],
            ["Is there a grading curve?", "ignored", "policy"],
            ["Who teaches DSC 410?", "", ""],
        ],
    )
    code, err, run = _prepare(tmp_path, capsys, monkeypatch, "--unanswerable", mine)
    assert code == 0, err
    rundir = RunDir(run)
    asked = read_jsonl(rundir.split_file("unanswerable"))
    assert [(r["question"], r["answer"], r["answerable"], r["kind"]) for r in asked] == [
        ("Is there a grading curve?", "", False, "policy"),
        ("Who teaches DSC 410?", "", False, "file"),
    ]
    report = json.loads(rundir.data_report_json.read_text())
    assert report["unanswerable_kind"] == "file" and report["splits"]["unanswerable"] == 2
    refusals = read_jsonl(rundir.split_file("refusals"))
    assert refusals and {r["part"] for r in refusals} == {"train", "val"}
    held = {question_key(q) for q in ("Is there a grading curve?", "Who teaches DSC 410?", TEST[1][0])}
    assert not held & {question_key(r["question"]) for r in refusals}
    assert not any("DSC 410" in r["question"] for r in refusals)  # as good as the evaluated one: left out


def test_without_a_file_the_set_is_generated_and_never_holds_a_test_question(tmp_path, capsys, monkeypatch):
    code, err, run = _prepare(tmp_path, capsys, monkeypatch)
    assert code == 0, err
    rundir = RunDir(run)
    generated = read_jsonl(rundir.split_file("unanswerable"))
    kinds = {r["kind"] for r in generated}
    assert {"off-topic", "missing-detail"} <= kinds and all(r["answerable"] is False for r in generated)
    assert json.loads(rundir.data_report_json.read_text())["unanswerable_kind"] == "generated"
    trained = {question_key(r["question"]) for r in read_jsonl(rundir.split_file("refusals"))}
    assert not trained & {question_key(r["question"]) for r in generated}
    assert question_key(TEST[1][0]) not in {question_key(r["question"]) for r in generated}


def test_a_test_file_may_mark_questions_unanswerable(tmp_path, capsys, monkeypatch):
    data = write_xlsx(tmp_path / "faq.xlsx", PAIRS)
    test = write_csv(
        tmp_path / "test.csv",
        [
            ["Question", "Answer", "Answerable"],
            [TEST[1][0], TEST[1][1], "yes"],
            ["Is there a grading curve?", "", "no"],
        ],
    )
    code, _, err = run_cli(
        ["prepare", data, "--out", tmp_path / "run", "--test", test, "--augment", "0", "--quiet"], capsys, monkeypatch
    )
    assert code == 0, err
    rows = read_jsonl(RunDir(tmp_path / "run").split_file("test"))
    assert [(r["question"], r["answerable"]) for r in rows] == [
        (TEST[1][0], True),
        ("Is there a grading curve?", False),
    ]
