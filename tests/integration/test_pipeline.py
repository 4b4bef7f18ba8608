"""`qatune run` through the real CLI on a tiny model: every stage's outputs, then reuse of finished stages."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

FACTS = [
    ("Who teaches the course?", "Professor Ada Lovelace teaches it."),
    ("When is the lecture?", "Mondays at 10:00 in Room 101."),
    ("How is the grade computed?", "Homework 40%, midterm 20%, final project 40%."),
    ("What is the title of this course?", "The course is Deep Learning."),
    ("Is there a final exam?", "No, the final project replaces it."),
    ("How many quizzes are there?", "There are 8 quizzes."),
    ("Where are office hours?", "Office hours are in Room 330."),
    ("What is the late policy?", "Late work loses 15% per day."),
    ("Can I use notes in the midterm?", "Yes, one page of notes."),
    ("What textbook is required?", "The quick brown fox book."),
    ("Who is the TA?", "The TA is Marcus."),
    ("When is homework due?", "Sundays at 11:59 pm."),
]


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer"])
        writer.writerows(rows)
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "qatune", *args], capture_output=True, text=True, cwd=cwd, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_run_writes_every_stage_and_reuses_them(tmp_path, tiny_model_dir):
    data = _write_csv(tmp_path / "faq.csv", FACTS * 2 + [(q + " please", a) for q, a in FACTS])
    test = _write_csv(
        tmp_path / "held_out.csv",
        [
            ("Who teaches this class?", FACTS[0][1]),
            ("When is the class held?", FACTS[1][1]),
            ("How many quizzes will there be?", FACTS[5][1]),
        ],
    )
    run = tmp_path / "run"
    args = [
        "run",
        str(data),
        "--test",
        str(test),
        "--out",
        str(run),
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1,2",
        "--max-new-tokens",
        "8",
        "--quiet",
    ]
    first = _run(args, tmp_path)

    for name in ("epoch-1", "epoch-2", "best"):
        assert (run / "models" / name / "adapter_model.safetensors").exists()
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["sweep"] == "one-pass"
    scores = json.loads((run / "eval" / "test" / "scores.json").read_text())
    assert scores["n"] == 3
    assert {"base", "retrieval", "epoch-1", "epoch-2", "best"} <= set(scores["models"])
    html = (run / "report" / "report.html").read_text()
    assert "epoch-2" in html and "data:image/png;base64," in html
    assert "report.html" in first.stdout
    assert (run / "config.yaml").exists() and (run / "manifest.json").exists()

    stamps = {
        p: p.stat().st_mtime_ns
        for p in (run / "models" / "epoch-2" / "adapter_model.safetensors", run / "eval" / "test" / "generations.jsonl")
    }
    _run(args, tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "finished stages must be reused"

    _run([*args, "--lora-r", "4"], tmp_path)
    adapter = json.loads((run / "models" / "epoch-2" / "adapter_config.json").read_text())
    assert adapter["r"] == 4, "a changed training flag retrains"
    regenerated = (run / "eval" / "test" / "generations.jsonl").stat().st_mtime_ns
    assert regenerated != stamps[run / "eval" / "test" / "generations.jsonl"], "new adapters are re-evaluated"


def test_run_line_gives_the_whole_run_time_unless_quiet(tmp_path, tiny_model_dir):
    data = _write_csv(tmp_path / "faq.csv", FACTS)
    run = tmp_path / "run"
    args = ["run", str(data), "--out", str(run), "--model", str(tiny_model_dir), "--epochs", "1"]
    first = _run([*args, "--max-new-tokens", "4"], tmp_path)
    lines = [line for line in first.stderr.splitlines() if line.startswith("run: ")]
    assert lines[0].startswith("run: prepare done · ") and lines[0].endswith(" left for the whole run"), lines
    assert any(line.startswith("run: train done · ") for line in lines)
    assert "train: done in" in first.stderr and "stages: " in first.stdout  # the lines scripts read are kept

    quiet = _run([*args, "--max-new-tokens", "6", "--quiet"], tmp_path)  # eval runs again, silently
    assert "run: " not in quiet.stdout + quiet.stderr
    reused = _run([*args, "--max-new-tokens", "6"], tmp_path)
    assert "up to date, reused" in reused.stderr
    assert "run: " not in reused.stderr  # every stage reused: nothing left to estimate
