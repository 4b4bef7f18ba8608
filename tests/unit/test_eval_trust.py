"""Trust on a real scored run (tiny model, real adapters, real scoring): questions the data does not answer are an
eval set of their own, every answer says whether it abstained and why, scores.json's trust table agrees with the
saved answers, and the report shows it."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from eval_run import make_run, run_config, write_jsonl
from qatune.evaluate.answer import evaluate
from qatune.report.html import build
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.trust.refusal import REFUSALS

UNANSWERABLE = [
    ("Who teaches CS 999?", "near-miss"),  # a course code the data never mentions: the question check abstains
    ("What is the phone number of the department?", "missing-detail"),  # no phone number in any answer
    ("Where is the cafeteria?", "missing-detail"),
    ("How many legs does a spider have?", "off-topic"),
]
TUNED = ("epoch-1", "epoch-2")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir):
    run = make_run(tmp_path_factory.mktemp("trust") / "run", tiny_model_dir, epochs=(1, 2))
    rows = [
        {"id": f"u{i}", "question": q, "answer": "", "answerable": False, "kind": k}
        for i, (q, k) in enumerate(UNANSWERABLE)
    ]
    write_jsonl(RunDir(run).split_file("unanswerable"), rows)
    config = run_config(run)
    return run, evaluate(run, config), evaluate(run, config, name="unanswerable")


def test_unanswerable_rows_record_abstention_and_no_reference_scores(scored):
    run, _, scores = scored
    rows = read_jsonl(RunDir(run).eval_generations("unanswerable"))
    assert len(rows) == 4 * len(UNANSWERABLE) and scores["n_unanswerable"] == len(UNANSWERABLE)
    for row in rows:
        assert row["answerable"] is False and isinstance(row["abstained"], bool)
        assert [m for m, v in row["metrics"].items() if v is not None] == (
            [] if row["model"] == "retrieval" or row["abstained_by"] == "question" else ["answer_nll"]
        )  # the refusal's NLL: how readily the model would have abstained
        if row["abstained_by"] != "question" and row["model"] != "retrieval":
            assert math.isfinite(row["metrics"]["answer_nll"])
    by = {(r["model"], r["question"]): r for r in rows}
    for model in TUNED:
        code = by[(model, "Who teaches CS 999?")]
        assert code["abstained_by"] == "question" and code["answer"] == REFUSALS["en"]
        assert code["unknown_facts"] == ["code CS 999"] and code["new_tokens"] == 0
        assert by[(model, "What is the phone number of the department?")]["abstained_by"] == "question"
    assert by[("base", "Who teaches CS 999?")]["abstained_by"] != "question"  # base is shown as it answers


def test_the_trust_table_agrees_with_the_saved_answers(scored):
    run, test_scores, scores = scored
    rows = read_jsonl(RunDir(run).eval_generations("unanswerable"))
    for model, entry in scores["trust"].items():
        mine = [r for r in rows if r["model"] == model]
        share = entry["unanswerable"]["abstained"]
        assert share["count"] == sum(r["abstained"] for r in mine)
        assert share["mean"] == pytest.approx(share["count"] / len(mine))
        assert entry["unanswerable"]["invented"]["count"] == len(mine) - share["count"]
        assert [e["question"] for e in entry["invented_examples"]] == [
            e["question"] for e in entry["invented_examples"] if not by_question(mine, e["question"])["abstained"]
        ]
        assert "answerable" not in entry
    for model in TUNED:
        assert scores["trust"][model]["abstained_by"]["question"] == 2
    answered = test_scores["trust"]["epoch-1"]["answerable"]
    counts = [answered[k]["count"] for k in ("right", "wrong_fact", "abstained")]
    assert sum(counts) == answered["n"] == test_scores["n"]
    abstained = answered["abstained"]["count"]
    wrong = sum(
        1
        for r in read_jsonl(RunDir(run).eval_generations("test"))
        if r["model"] == "epoch-1" and not r["abstained"] and r["metrics"]["wrong_fact"]
    )
    assert answered["wrong_fact"]["count"] == wrong and abstained == sum(
        1 for r in read_jsonl(RunDir(run).eval_generations("test")) if r["model"] == "epoch-1" and r["abstained"]
    )


def by_question(rows, question):
    return next(r for r in rows if r["question"] == question)


def test_the_report_shows_trust_and_the_recommendation_records_it(scored, tmp_path):
    run, _, _ = scored
    copy = shutil.copytree(run, tmp_path / "run")
    page = build(copy).read_text(encoding="utf-8")
    assert "Trust: right, wrong key fact, abstained" in page
    assert "questions it does not answer" in page and "abstained (right)" in page
    assert "Invented answers" in page or "abstained on 100%" in page
    rec = json.loads((RunDir(copy).report_dir / "recommendation.json").read_text())
    for candidate in rec["evidence"]["candidates"]:
        trust = candidate["trust"]
        assert trust["unanswerable_set"] == "unanswerable" and trust["n_unanswerable"] == len(UNANSWERABLE)
        assert trust["abstained_unanswerable"]["count"] >= 2  # the two the question check catches
