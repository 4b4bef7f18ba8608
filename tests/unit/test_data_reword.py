"""Rule-based question rewording: each rule's shape, and that words are only moved or added, so numbers,
dates, codes and names always survive; fact groups and natural paraphrase hold-outs in the split."""

from __future__ import annotations

import random
import re

import pytest

from qatune.data.augment import reword, rewordings
from qatune.data.clean import question_key
from qatune.data.reword import REWRITES, rewrite
from qatune.data.split import paraphrase_holdout, split_pairs


@pytest.mark.parametrize(
    ("rule", "question", "expected"),
    [
        ("indirect", "When are the lectures held?", "when the lectures are held"),
        ("indirect", "What is the title of this course?", "what the title of this course is"),
        ("indirect", "When is gradient descent discussed in the course?", "when gradient descent is discussed"),
        ("request", "What is the course code?", "the course code."),
        ("keywords", "What is the title of this course?", "The title of this course?"),
        ("contraction", "What is the title of DSC 310?", "What's the title of DSC 310?"),
        ("preposition", "In which semester is this course offered?", "Which semester is this course offered in?"),
        ("preposition", "Which room is the lab in?", "In which room is the lab?"),
        ("front", "What topics are covered in this course?", "In this course, what topics are covered?"),
    ],
)
def test_each_rule_rewrites_the_question_form(rule, question, expected):
    assert expected in REWRITES[rule](question, random.Random(0))


def test_rules_decline_shapes_they_cannot_rewrite():
    rng = random.Random(0)
    assert REWRITES["indirect"]("When does the class meet?", rng) is None  # verb agreement needed
    assert REWRITES["request"]("Who teaches DSC 310?", rng) is None
    assert REWRITES["front"]("What is the title of this course?", rng) is None  # never 'Of this course, ...'
    assert REWRITES["wrap"]("Tell me the room.", rng) is None


QUESTIONS = [
    "How many credits is DSC 310 worth?",
    "Who is the TA for ESE 577 in Fall 2026?",
    "When is the midterm on 10/24 at 2:00 pm held?",
    "What is the late penalty of 20% per day for this course?",
    "Where does Prof. Imani Okafor hold office hours in Whitfield Hall 214?",
    "Is attendance mandatory for the Friday labs?",
]


def _protected(text: str) -> list[str]:
    """Tokens that must never change: anything with a digit, and capitalized words after the first."""
    words = re.findall(r"[\w%:/.']+", text)
    return sorted(w.strip(".") for i, w in enumerate(words) if re.search(r"\d", w) or (i > 0 and w[:1].isupper()))


@pytest.mark.parametrize("question", QUESTIONS)
def test_rewrites_keep_numbers_codes_and_names(question):
    for seed in range(40):
        text = rewrite(question, random.Random(seed))
        if text is None:
            continue
        kept = _protected(text)
        for token in _protected(question):
            assert token in kept, (question, text)


def test_rewordings_are_new_distinct_and_keep_the_answer():
    pairs = [{"id": f"r{i}", "question": q, "answer": f"A{i}.", "source_row": i} for i, q in enumerate(QUESTIONS)]
    taken = {question_key(p["question"]) for p in pairs}
    made = rewordings(pairs, 2, seed=1, taken=set(taken), method="rules")
    assert len(made) >= len(pairs)  # most questions get two, none are lost
    keys = [question_key(r["question"]) for r in made]
    assert len(keys) == len(set(keys)) and not set(keys) & taken
    by_id = {p["id"]: p for p in pairs}
    assert all(r["answer"] == by_id[r["augmented_from"]]["answer"] for r in made)
    assert made == rewordings(pairs, 2, seed=1, taken=set(taken), method="rules")  # deterministic by seed
    assert reword("Room 214.", random.Random(0), "rules") is None  # no rule applies: nothing made up


def test_paraphrase_groups_train_one_wording_and_validate_another():
    train = [
        {"id": "a", "question": "Who teaches it?", "answer": "Prof. Okafor.", "source_row": 2},
        {"id": "b", "question": "Who is the instructor?", "answer": "Prof. Okafor.", "source_row": 3},
        {"id": "c", "question": "Where is it?", "answer": "Room 214.", "source_row": 4},
    ]
    kept, held = paraphrase_holdout(train, limit=5, seed=0)
    assert [p["id"] for p in kept] == ["a", "c"] and [(p["id"], p["kind"]) for p in held] == [("b", "paraphrase")]
    assert paraphrase_holdout(train, limit=0, seed=0) == (train, [])


def test_held_out_facts_never_share_an_answer_with_training():
    pairs = [
        {"id": f"p{i}", "question": f"Question {i}?", "answer": f"Answer {i // 2}.", "source_row": i} for i in range(40)
    ]
    splits = split_pairs(pairs, 0.2, 0.2, seed=0)
    trained = {p["answer"] for p in splits.train}
    assert splits.val and splits.test
    assert not trained & {p["answer"] for p in splits.val + splits.test}


def test_mixed_rewording_falls_back_to_rules_without_wordnet(monkeypatch, capsys):
    from qatune import data
    from qatune.console import QatuneError

    def missing():
        raise QatuneError("WordNet is not installed")

    monkeypatch.setattr(data.augment, "wordnet", missing)
    monkeypatch.setattr(data.augment, "_warned", [])
    pairs = [{"id": "r0", "question": "When are the lectures held?", "answer": "Tuesdays.", "source_row": 2}]
    made = rewordings(pairs, 2, seed=0, taken=set(), method="mixed")
    assert made and "rewording questions by rules only" in capsys.readouterr().err
    with pytest.raises(QatuneError, match="WordNet is not installed"):
        rewordings(pairs, 1, seed=0, taken=set(), method="wordnet")
