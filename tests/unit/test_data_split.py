"""Splits: deterministic by seed, grouped by normalized question, sizes near the fractions, no leakage."""

from __future__ import annotations

import random

from qatune.data.clean import question_key
from qatune.data.split import split_pairs, split_with_test


def _pairs(n: int, dup_every: int = 0) -> list[dict]:
    pairs = []
    for i in range(n):
        q = f"Question number {i // dup_every if dup_every else i}?"
        if dup_every and i % 2:
            q = q.upper().replace("?", " ?!")  # same normalized form, different spelling
        pairs.append({"id": f"row-{i + 2}", "question": q, "answer": f"A{i}.", "source_row": i + 2})
    return pairs


def _ids(splits) -> tuple[list[str], list[str], list[str]]:
    return [p["id"] for p in splits.train], [p["id"] for p in splits.val], [p["id"] for p in splits.test]


def _keys(rows: list[dict]) -> set[str]:
    return {question_key(p["question"]) for p in rows}


def test_split_is_deterministic_by_seed_and_sized_by_fractions():
    pairs = _pairs(200)
    a, b, c = (split_pairs(pairs, 0.1, 0.15, seed) for seed in (42, 42, 7))
    assert _ids(a) == _ids(b) and _ids(a) != _ids(c)
    assert (len(a.train), len(a.val), len(a.test)) == (150, 20, 30)
    every = sorted(sum(_ids(a), []), key=lambda s: int(s.split("-")[1]))
    assert every == [p["id"] for p in pairs]
    assert [p["source_row"] for p in a.train] == sorted(p["source_row"] for p in a.train)  # source order kept


def test_same_normalized_question_stays_in_one_split():
    pairs = _pairs(120, dup_every=3)
    for seed in range(20):
        s = split_pairs(pairs, 0.2, 0.2, seed)
        assert not (_keys(s.train) & _keys(s.val)) and not (_keys(s.train) & _keys(s.test))
        assert not (_keys(s.val) & _keys(s.test))
        assert abs(len(s.test) - 24) <= 2 and abs(len(s.val) - 24) <= 2


def test_random_groupings_never_leak():
    rng = random.Random(0)
    for trial in range(30):
        n = rng.randint(1, 60)
        pairs = [
            {"id": f"r{i}", "question": f"q{rng.randint(0, n // 2)}", "answer": "a", "source_row": i} for i in range(n)
        ]
        s = split_pairs(pairs, rng.choice([0, 0.1, 0.3]), rng.choice([0, 0.1, 0.3]), trial)
        assert len(s.train) + len(s.val) + len(s.test) == n and s.train
        assert not (_keys(s.train) & (_keys(s.val) | _keys(s.test))) and not (_keys(s.val) & _keys(s.test))


def test_tiny_inputs_keep_everything_for_training():
    s = split_pairs(_pairs(2), 0.1, 0.1, 42)
    assert len(s.train) == 2 and not s.val and not s.test
    assert len(s.warnings) == 2 and "too few distinct questions" in s.warnings[0]
    s = split_pairs(_pairs(3), 0.1, 0.1, 42)
    assert (len(s.train), len(s.val), len(s.test)) == (1, 1, 1)


def test_explicit_test_set_removes_its_questions_from_training():
    pairs = _pairs(50)
    test = [
        {"id": "test-2", "question": "question NUMBER 7", "answer": "x", "source_row": 2},
        {"id": "test-3", "question": "Something new?", "answer": "y", "source_row": 3},
    ]
    s = split_with_test(pairs, test, 0.1, 42)
    assert s.test == test
    assert s.dropped == [{"row": 9, "reason": "same question as test file row 2 (kept out of training)"}]
    assert len(s.train) + len(s.val) == 49 and len(s.val) == 5
    assert "question number 7" not in _keys(s.train) | _keys(s.val)
