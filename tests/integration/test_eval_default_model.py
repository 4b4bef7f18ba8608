"""The eval stage with the real default model (SmolLM2-135M-Instruct) on 5 reworded questions about the example
syllabus, asked for a one-sentence answer so the check is about end-of-turn handling, not the untuned model's
verbosity: answers carry no prompt echo and end at the model's end-of-turn token; retrieval finds training answers."""

from __future__ import annotations

import json

import pytest
import yaml

from example_runs import example_pairs, reworded_questions
from qatune.evaluate.answer import evaluate
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

pytestmark = pytest.mark.slow
BRIEF = "Answer in one short sentence."
LIMIT = 64


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_default_model_eval_on_reworded_example_questions(tmp_path):
    from qatune import config as cfg

    pairs = example_pairs(100)  # the whole example spreadsheet
    held_out = reworded_questions(pairs, 5)
    run = tmp_path / "run"
    _jsonl(run / "data" / "train.jsonl", pairs)
    _jsonl(run / "data" / "test.jsonl", [{**q, "question": f"{q['question']} {BRIEF}"} for q in held_out])
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "default", "eval": {"max_new_tokens": LIMIT}}))
    scores = evaluate(run, cfg.load_for_run(run, None, {}, save=False))

    rows = read_jsonl(RunDir(run).eval_generations("test"))
    base = [r for r in rows if r["model"] == "base"]
    assert len(base) == 5 and scores["kinds"] == {"base": "base", "retrieval": "baseline"}
    for row in base:
        assert row["answer"] and row["question"] not in row["answer"]
        assert not any(tag in row["answer"] for tag in ("<|im_start|>", "<|im_end|>", "user\n", "assistant\n"))
        assert row["metrics"]["answer_nll"] > 0
        assert row["new_tokens"] <= LIMIT and (row["stopped"] or row["new_tokens"] == LIMIT)
    assert sum(r["stopped"] for r in base) >= 4 and scores["stop_rate"]["base"] >= 0.8
    # The questions reword training questions: the lookup beats the untuned base on meaning.
    assert scores["models"]["retrieval"]["semantic"]["mean"] > scores["models"]["base"]["semantic"]["mean"]
