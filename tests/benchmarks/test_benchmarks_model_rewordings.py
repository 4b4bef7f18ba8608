"""benchmarks/model_rewordings.py: which model-written rewordings are kept, and how they replace the rule-made
ones in a prepared run (same rows, same ids, held-out questions never reused). The sampler is replaced by
fixed samples; the MiniLM filter is the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_a_rewording_keeps_numbers_codes_and_names_and_stays_a_question():
    import model_rewordings as mr

    original = "How many credits is DSC 310 worth for Prof. Okafor's students?"
    assert mr.acceptable(original, "How many credits does DSC 310 count for Prof. Okafor's students?", set())
    assert not mr.acceptable(original, "How many credits does DSC 320 count for Prof. Okafor's students?", set())
    assert not mr.acceptable(original, "How many credits does the course count for Prof. Okafor's students?", set())
    assert not mr.acceptable(original, "How many credits is DSC 310 worth for Prof. Lee's students?", set())
    assert not mr.acceptable(original, "DSC 310 is worth 4 credits for Prof. Okafor's students.", set())
    assert not mr.acceptable("When is the midterm?", "When is the midterm held in 2026?", set())
    assert not mr.acceptable("When is the midterm?", "When is the midterm exam?", {"when is the midterm exam"})


def test_model_rewordings_replace_rule_ones_row_for_row(tmp_path, monkeypatch):
    import model_rewordings as mr

    from qatune.storage import read_jsonl, write_jsonl

    data = tmp_path / "data"
    data.mkdir()
    train = [
        {"id": "r1", "question": "Where are the lectures held?", "answer": "In Whitfield Hall 214."},
        {"id": "r1-aug1", "question": "Where are lectures held, please?", "answer": "In Whitfield Hall 214.",
         "augmented_from": "r1"},
        {"id": "r1-aug2", "question": "Tell me where the lectures are held.", "answer": "In Whitfield Hall 214.",
         "augmented_from": "r1"},
        {"id": "r2", "question": "How much is the homework worth?", "answer": "30% of the grade."},
        {"id": "r2-aug1", "question": "What is the homework worth?", "answer": "30% of the grade.",
         "augmented_from": "r2"},
    ]  # fmt: skip
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", [{"id": "t1", "question": "Where do the lectures happen?", "answer": "x"}])
    samples = {
        "Where are the lectures held?": [
            "Where do the lectures take place?",
            "Where do the lectures happen?",  # a test question: never trained
            "Where are the lectures held?",  # the original
            "Lectures are in a hall.",  # not a question
            "What is the capital of France?",  # another meaning
        ],
        "How much is the homework worth?": ["What is the homework worth in 2026?"],  # adds a number
    }
    monkeypatch.setattr(mr, "sample_rewordings", lambda qs, n, seed: [samples[q] for q in qs])
    stats = mr.rewrite_training_rows(tmp_path, 5, 0.8, 42)

    rows = read_jsonl(data / "train.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in train]
    by_id = {r["id"]: r for r in rows}
    assert by_id["r1-aug1"]["question"] == "Where do the lectures take place?"
    assert by_id["r1-aug1"]["reworded_by"] == "model"
    assert by_id["r1-aug2"]["question"] == "Tell me where the lectures are held."  # nothing else passed
    assert by_id["r2-aug1"]["question"] == "What is the homework worth?"
    assert all(r["answer"] == t["answer"] for r, t in zip(rows, train, strict=True))
    assert stats["model_written"] == 1 and stats["rewordings"] == 3 and stats["training_questions"] == 2
