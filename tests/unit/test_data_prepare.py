"""The prepare stage end to end: RUN/data contract, row-level report, explicit test set, augmentation,
stamps, the question-file reader, the shipped example data and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from qa_files import write_csv, write_xlsx

from qatune.config import Config, load
from qatune.console import QatuneError
from qatune.data import augment
from qatune.data.clean import question_key
from qatune.data.prepare import example_data_path, example_test_path, is_current, load_questions, prepare
from qatune.rundir import RunDir
from qatune.storage import file_sha256, read_jsonl

REPORT_KEYS = {"valid_pairs", "splits", "test_kind", "unanswerable_kind", "dropped", "warnings", "source"}
SPLIT_KEYS = {
    "train",
    "val",
    "test",
    "unseen",
    "unanswerable",
    "refusals",
    "train_augmented",
    "val_paraphrase",
    "val_generated",
    "val_unseen",
}
SOURCE_KEYS = {"path", "sha256", "sheet", "question_col", "answer_col", "header_row"}
HAS_WORDNET = (augment.SYSTEM_WORDNET / "data.noun").is_file()


def _config(**prepare_fields) -> Config:
    prepare_fields.setdefault("augment", 0)
    prepare_fields.setdefault("augment_method", "rules")  # no WordNet needed
    return load(None, {"prepare": prepare_fields, "model": "no-such-org/no-such-model"})


def _splits(run: Path) -> dict[str, list[dict]]:
    rundir = RunDir(run)
    return {name: read_jsonl(rundir.split_file(name)) for name in ("train", "val", "test", "unseen")}


def _messy_workbook(path: Path) -> Path:
    rows = [
        ["Course FAQ — Fall 2026"],  # 1 title
        [None],  # 2 blank
        ["#", "  Student QUESTION ", "Model Answer", "Notes"],  # 3 header (odd names, extra columns)
        [1, "Who teaches the course?", "Prof. Okafor.", "x"],  # 4
        [2, "When is the midterm?", None, "missing answer"],  # 5 empty answer
        [None, None, None, None],  # 6 blank
        [3, None, "An answer without a question.", None],  # 7 empty question
        [4, "Who teaches the course? ", " Prof.\u00a0Okafor.", None],  # 8 duplicate of 4 after cleaning
        [5, "WHO teaches the course", "Dr. Okafor.", None],  # 9 conflicting answer (kept, warned)
        [6, "   ", "\u00a0", "only spaces"],  # 10 blank after cleaning
    ] + [[i, f"Question {i}?", f"Answer {i}.", None] for i in range(7, 27)]  # 11..30
    return write_xlsx(path, rows, title="Data", more={"Readme": [["About this file"]]})


def test_messy_workbook_reports_every_dropped_row(tmp_path):
    report = prepare(_messy_workbook(tmp_path / "messy.xlsx"), tmp_path / "run", _config())
    assert set(report) == REPORT_KEYS and set(report["source"]) == SOURCE_KEYS
    assert report["dropped"] == [
        {"row": 5, "reason": "empty answer"},
        {"row": 7, "reason": "empty question"},
        {"row": 8, "reason": "duplicate of row 4"},
    ]
    assert report["valid_pairs"] == 22
    src = report["source"]
    assert (src["sheet"], src["header_row"], src["question_col"], src["answer_col"]) == (
        "Data",
        3,
        "  Student QUESTION ",
        "Model Answer",
    )
    assert src["sha256"] == file_sha256(tmp_path / "messy.xlsx")
    assert any("rows 4, 9 ask the same question" in w for w in report["warnings"])
    md = RunDir(tmp_path / "run").data_report_md.read_text()
    assert "| 5 | empty answer |" in md and "| 8 | duplicate of row 4 |" in md and "blank rows skipped | 2" in md


def test_outputs_follow_the_run_directory_contract(tmp_path):
    run = tmp_path / "run"
    config = _config(val_frac=0.2, test_frac=0.2, seed=3)
    report = prepare(example_data_path(), run, config)
    rundir = RunDir(run)
    assert json.loads(rundir.data_report_json.read_text()) == report
    splits = _splits(run)
    counts = {name: len(rows) for name, rows in splits.items()}
    assert set(report["splits"]) == SPLIT_KEYS and report["test_kind"] == "generated"
    assert {k: report["splits"][k] for k in counts} == counts and report["splits"]["train_augmented"] == 0
    unseen_facts = [r for r in splits["val"] if r["kind"] == "unseen"] + splits["unseen"]
    assert len(splits["train"]) + len(unseen_facts) == report["valid_pairs"]  # every pair trains or is held out
    for row in splits["train"]:
        assert set(row) == {"id", "question", "answer", "source_row"}
    # validation and test ask about trained facts in other words; unseen rows are facts never trained
    trained = {r["id"]: r for r in splits["train"]}
    for row in [r for r in splits["val"] if r["kind"] == "generated"] + splits["test"]:
        assert row["kind"] == "generated" and row["answer"] == trained[row["augmented_from"]]["answer"]
        assert question_key(row["question"]) != question_key(trained[row["augmented_from"]]["question"])
    assert {r["kind"] for r in splits["unseen"]} == {"unseen"}
    assert not {question_key(r["answer"]) for r in unseen_facts} & {question_key(r["answer"]) for r in trained.values()}
    keys = [question_key(r["question"]) for rows in splits.values() for r in rows]
    assert len(keys) == len(set(keys))  # no question in two places
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))
    saved = load(rundir.config_yaml)
    assert saved.prepare.seed == 3 and saved.prepare.val_frac == 0.2
    assert is_current(run, None, config)
    assert not is_current(run, None, _config(val_frac=0.2, test_frac=0.2, seed=4))
    rundir.split_file("val").write_text("tampered\n")
    assert not is_current(run, None, config)
    assert not is_current(tmp_path / "elsewhere", None, config)


def test_is_current_follows_the_source_bytes(tmp_path):
    data = write_csv(tmp_path / "d.csv", [["Question", "Answer"]] + [[f"Q{i}?", f"A{i}."] for i in range(20)])
    config = _config()
    prepare(data, tmp_path / "run", config)
    assert is_current(tmp_path / "run", data, config)
    write_csv(data, [["Question", "Answer"]] + [[f"Q{i}?", f"A{i}!"] for i in range(20)])
    assert not is_current(tmp_path / "run", data, config)


def test_explicit_test_file(tmp_path):
    data = write_csv(tmp_path / "d.csv", [["Question", "Answer"]] + [[f"Q{i}?", f"A{i}."] for i in range(30)])
    test = write_csv(
        tmp_path / "t.csv", [["prompt", "reference_answer"], ["q3", "A3."], ["New?", ""], ["Brand new?", "Yes."]]
    )
    report = prepare(data, tmp_path / "run", _config(val_frac=0.1), test_file=test)
    splits = _splits(tmp_path / "run")
    assert [r["id"] for r in splits["test"]] == ["test-2", "test-4"]
    assert {"row": 5, "reason": "same question as test file row 2 (kept out of training)"} in report["dropped"]
    assert {"row": 3, "reason": "test file: empty answer"} in report["dropped"]
    assert report["splits"]["train"] + report["splits"]["val_unseen"] == 29 and report["splits"]["val_unseen"] == 3
    assert report["test_kind"] == "file" and splits["unseen"] == []
    assert "q3" not in {question_key(r["question"]) for r in splits["train"] + splits["val"]}
    assert not is_current(tmp_path / "run", data, _config(val_frac=0.1))
    assert is_current(tmp_path / "run", data, _config(val_frac=0.1), test)


@pytest.mark.skipif(not HAS_WORDNET, reason="WordNet files not installed")
def test_augmentation_only_touches_train_and_never_leaks(tmp_path):
    report = prepare(example_data_path(), tmp_path / "run", _config(augment=2, augment_method="mixed"))
    splits = _splits(tmp_path / "run")
    augmented = [r for r in splits["train"] if "augmented_from" in r]
    assert report["splits"]["train_augmented"] == len(augmented) > 80
    assert len(splits["train"]) == report["splits"]["train"] + len(augmented)
    train_ids = {r["id"] for r in splits["train"] if "augmented_from" not in r}
    assert {r["augmented_from"] for r in augmented} <= train_ids
    held_out = {question_key(r["question"]) for r in splits["val"] + splits["test"] + splits["unseen"]}
    assert not held_out & {question_key(r["question"]) for r in splits["train"]}


def test_load_questions_reads_any_file_by_the_same_rules(tmp_path):
    rows = load_questions(example_test_path(), Config())
    assert len(rows) == 37 and set(rows[0]) == {"id", "question", "answer", "source_row"}
    assert rows[0] == {
        "id": "q-2",
        "question": "What's the name of this class?",
        "answer": "The course is DSC 310 — Applied Machine Learning.",
        "source_row": 2,
    }
    config = _config(question_col="Frage", answer_col="Antwort", sheet="Elsewhere")
    path = write_xlsx(tmp_path / "q.xlsx", [["Title"], ["Question", "Answer", "Extra"], ["Q?", "A.", "x"]])
    assert load_questions(path, config) == [{"id": "q-3", "question": "Q?", "answer": "A.", "source_row": 3}]
    with pytest.raises(QatuneError, match="no valid question/answer pairs"):
        load_questions(write_csv(tmp_path / "e.csv", [["Question", "Answer"], ["Q?", ""]]), Config())


def test_example_data_is_a_consistent_syllabus():
    from qa_files import ingest

    table, cleaned = ingest(example_data_path())
    assert table.header_row == 3 and table.sheet == "FAQ"  # a title row sits above the header
    assert len(cleaned.pairs) >= 70 and not cleaned.dropped and not cleaned.warnings
    answers = " ".join(p["answer"] for p in cleaned.pairs)
    assert "Prof. Imani Okafor" in answers and "DSC 310" in answers and "20%" in answers
    keys = {question_key(p["question"]) for p in cleaned.pairs}
    assert len(keys) == len(cleaned.pairs)


def test_real_cli_prepares_the_example_and_refuses_a_broken_file(tmp_path):
    exe = Path(sys.executable).with_name("qatune")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "qatune"]
    ok = subprocess.run([*cmd, "prepare", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "valid pairs" in ok.stdout and RunDir(tmp_path / "run").data_report_json.is_file()
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(example_data_path().read_bytes()[:2000])
    bad = subprocess.run(
        [*cmd, "prepare", str(broken), "--out", str(tmp_path / "run2")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "re-save" in lines[0]
    assert not (tmp_path / "run2" / "data").exists()


def test_test_file_equal_to_the_data_is_refused(tmp_path):
    data = write_csv(tmp_path / "d.csv", [["Question", "Answer"], ["Q1?", "A."], ["Q2?", "B."]])
    with pytest.raises(QatuneError, match="nothing is left to train on"):
        prepare(data, tmp_path / "run", _config(), test_file=data)
    assert not (tmp_path / "run" / "data").exists()
