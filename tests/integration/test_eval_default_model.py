"""The eval stage with the real default model (SmolLM2-135M-Instruct) on the seed's 5 questions, asked
for a one-sentence answer so the check is about end-of-turn handling, not the untuned model's verbosity:
answers carry no prompt echo and end at the model's end-of-turn token; retrieval finds training answers."""

from __future__ import annotations

import json

import pytest
import yaml

from qatune.evaluate.answer import evaluate
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

pytestmark = pytest.mark.slow
BRIEF = "Answer in one short sentence."
LIMIT = 64


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_default_model_eval_on_seed_questions(tmp_path, seed_dir):
    from qatune import config as cfg

    pairs = json.loads((seed_dir / "QA_dataset.json").read_text())[:100]  # the spreadsheet's 100 rows
    held_out = json.loads((seed_dir / "eval_questions.json").read_text())
    run = tmp_path / "run"
    _jsonl(
        run / "data" / "train.jsonl",
        [
            {"id": f"tr{i}", "question": p["question"].strip(), "answer": p["answer"].strip(), "source_row": i + 2}
            for i, p in enumerate(pairs)
        ],
    )
    _jsonl(
        run / "data" / "test.jsonl",
        [
            {
                "id": f"te{i}",
                "question": f"{q['question']} {BRIEF}",
                "answer": q["reference_answer"],
                "source_row": i + 2,
            }
            for i, q in enumerate(held_out)
        ],
    )
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
    # The seed's questions paraphrase training questions: the lookup beats the untuned base on meaning.
    assert scores["models"]["retrieval"]["semantic"]["mean"] > scores["models"]["base"]["semantic"]["mean"]
