"""`qatune eval` through the real CLI: a --questions CSV (extra columns ignored) scored into RUN/eval/NAME,
and bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eval_run import ensure_load_questions, make_run
from qatune.rundir import RunDir

CSV = (
    "Question,Answer,Notes\n"
    "Which professor teaches this class?,Professor Ada Lovelace teaches the course.,ignored\n"
    '"How are grades calculated?","Homework 40%, midterm 20%, final project 40%.",ignored\n'
    "Where is the classroom?,Room 101.,\n"
)


@pytest.fixture
def run(tmp_path, tiny_model_dir):
    return make_run(tmp_path / "run", tiny_model_dir, epochs=(1,))


def test_eval_cli_with_a_questions_csv(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from qatune.cli import app

    ensure_load_questions(monkeypatch)
    questions = tmp_path / "held out.csv"
    questions.write_text(CSV, encoding="utf-8")
    args = ["eval", "--run", str(run), "--questions", str(questions), "--quiet", "--max-new-tokens", "5"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, Exception) and "invalid eval set name" in str(result.exception)

    result = CliRunner().invoke(app, [*args, "--name", "held-out", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output and "epoch-1" in result.output  # the results table
    rundir = RunDir(run)
    scores = json.loads(rundir.eval_scores("held-out").read_text())
    assert scores["n"] == 3 and scores["source"] == str(questions.resolve())
    assert list(scores["models"]) == ["base", "retrieval", "epoch-1"]
    rows = [json.loads(line) for line in rundir.eval_generations("held-out").read_text().splitlines()]
    assert len(rows) == 9 and all(r["new_tokens"] <= 5 for r in rows)
    assert {r["reference"] for r in rows} >= {"Room 101."}
    combined = json.loads(rundir.eval_combined("held-out").read_text())
    assert [c["question"] for c in combined][0] == "Which professor teaches this class?"
    assert rundir.eval_sets() == ["held-out"]

    from qatune import config as cfg
    from qatune.evaluate.answer import is_current

    settings = cfg.load_for_run(run, None, {"eval": {"max_new_tokens": 5}}, save=False)
    assert is_current(run, settings, "held-out", questions)
    assert not is_current(run, settings, "held-out", tmp_path / "other.csv")
    assert not is_current(run, settings, "test")  # the test split was never scored
    questions.write_text(CSV.replace("Room 101.", "Room 102."), encoding="utf-8")
    assert not is_current(run, settings, "held-out", questions)


def test_eval_cli_bad_input_is_one_line_exit_2(run, tmp_path):
    cmd = [sys.executable, "-m", "qatune", "eval", "--run", str(run), "--questions", str(tmp_path / "no.csv")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "questions file not found" in proc.stderr
    proc = subprocess.run([*cmd[:6], "--models", "epoch-7"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no model 'epoch-7'" in proc.stderr and "Traceback" not in proc.stderr
