"""Grounded training examples: one per trained pair, asked in a reworded form, answered with the trained
answer, with at most k retrieved pairs in the prompt; contexts that do not fit the training length shrink."""

from __future__ import annotations

import numpy as np
import pytest

from qatune.rag import examples as grounded
from qatune.rundir import RunDir
from qatune.storage import read_jsonl, write_jsonl

WORDS = ["room", "teacher", "credits", "exam", "lab", "office"]


class BagOfWords:
    """The MiniLM embedder's call shape: one dimension per known word."""

    def encode(self, texts, **_):
        rows = np.array([[float(w in t.lower()) for w in WORDS] + [0.1] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


PAIRS = [
    ("p1", "Which room is the course in?", "Room 214."),
    ("p2", "Who is the teacher?", "Prof. Okafor, who has taught the course since 2019 and runs the lab."),
    ("p3", "How many credits?", "4 credits."),
    ("p4", "When is the exam?", "May 12."),
    ("p5", "Where are office hours?", "Room 3.101."),
]


@pytest.fixture()
def run(tmp_path, monkeypatch):
    import qatune.rag.embeddings as embeddings

    monkeypatch.setattr(embeddings, "load_embedder", lambda *a, **k: BagOfWords())
    rows = [{"id": i, "question": q, "answer": a, "source_row": n} for n, (i, q, a) in enumerate(PAIRS, start=2)]
    rows.append(
        {
            "id": "p1-a1",
            "question": "What room is the course held in?",
            "answer": "Room 214.",
            "augmented_from": "p1",
            "source_row": 2,
        }
    )
    rundir = RunDir(tmp_path / "run")
    rundir.split_file("train").parent.mkdir(parents=True)
    rundir.train_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(rundir.split_file("train"), rows)
    return rundir


def _context(question: str) -> list[str]:
    return [line[3:] for line in question.splitlines() if line.startswith("Q: ")]


def test_each_pair_is_asked_once_reworded_with_its_trained_answer_and_k_retrieved_pairs(run):
    rows = read_jsonl(grounded.write_grounded_split(run, seed=42, k=2))
    assert [r["id"] for r in rows] == [f"p{i}-rag" for i in range(1, 6)]
    assert [r["answer"] for r in rows] == [a for _, _, a in PAIRS]
    assert rows[0]["question"].endswith("Question: What room is the course held in?")
    assert all(len(_context(r["question"])) == 2 for r in rows)
    assert all(set(_context(r["question"])) <= {q for _, q, _ in PAIRS} for r in rows)


def test_a_context_too_long_for_the_training_length_drops_distractors_first(run):
    def fits(question: str, answer: str) -> bool:
        return len(question) + len(answer) < 150

    rows = {r["id"]: r for r in read_jsonl(grounded.write_grounded_split(run, seed=42, k=2))}
    short = {r["id"]: r for r in read_jsonl(grounded.write_grounded_split(run, seed=42, k=2, fits=fits))}
    assert all(len(r["question"]) + len(r["answer"]) < 150 for r in short.values())
    for key, row in short.items():
        before = _context(rows[key]["question"])
        assert set(_context(row["question"])) <= set(before) and len(_context(row["question"])) >= 1
        own = next(q for i, q, _ in PAIRS if f"{i}-rag" == key)
        if own in before and len(_context(row["question"])) == 1:
            assert _context(row["question"]) == [own], "the pair itself outlives its distractors"
    fitting = [k for k, r in rows.items() if fits(r["question"], r["answer"])]
    assert fitting and all(short[k] == rows[k] for k in fitting), "an example that fits keeps its context"
    assert any(len(_context(r["question"])) == 1 for r in short.values())


def test_an_example_that_fits_with_no_context_is_left_out_with_a_warning(run, capsys):
    rows = read_jsonl(grounded.write_grounded_split(run, seed=42, k=2, fits=lambda q, a: len(a) < 40))
    assert "p2-rag" not in {r["id"] for r in rows} and len(rows) == 4
    assert "1 grounded example(s) left out" in capsys.readouterr().err


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_oracle_share_sets_how_many_contexts_hold_the_right_pair(run, share):
    rows = read_jsonl(grounded.write_grounded_split(run, seed=42, k=2, oracle_share=share))
    own = {f"{i}-rag": q for i, q, _ in PAIRS}
    holding = [own[r["id"]] in _context(r["question"]) for r in rows]
    assert len(rows) == 5 and all(len(_context(r["question"])) == 2 for r in rows)
    assert holding == [share == 1.0] * 5
