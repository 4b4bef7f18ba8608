"""WordNet augmentation: offline corpus built from the system files, protected tokens, determinism."""

from __future__ import annotations

import random
import re

import pytest

from qatune.console import QatuneError
from qatune.data import augment
from qatune.data.clean import question_key

pytestmark = pytest.mark.skipif(
    not (augment.SYSTEM_WORDNET / "data.noun").is_file(),
    reason="WordNet files not installed (apt-get install wordnet-base)",
)

QUESTIONS = [
    "When is the ESE 577 midterm exam held on October 20, 2026 at 2:00 pm?",
    "Where does Prof. Imani Okafor hold office hours in Whitfield Hall 330 on Wednesdays?",
    "What happens if the homework is submitted 3 days late on 09/12?",
    "Is attendance mandatory for the DSC 310 lectures and the lab on Friday at 10:00 am?",
    "How should students contact the teaching assistant Marcus Lindqvist about a regrade?",
]


def _protected(text: str) -> list[str]:
    """Tokens that must survive: anything with a digit, capitalized words, and the words touching digits."""
    chunks = text.split()
    keep = []
    for i, chunk in enumerate(chunks):
        near_digit = any(re.search(r"\d", chunks[j]) for j in (i - 1, i + 1) if 0 <= j < len(chunks))
        if re.search(r"\d", chunk) or chunk[:1].isupper() or near_digit:
            keep.append(chunk)
    return keep


def test_wordnet_folder_is_built_offline_with_lexnames():
    folder = augment.wordnet_dir()
    assert folder == augment.nltk_data_dir() / "corpora" / "wordnet"
    lines = (folder / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0].split("\t") == ["00", "adj.all", "3"] and lines[44].split("\t") == ["44", "adj.ppl", "3"]
    assert lines[18].split("\t") == ["18", "noun.person", "1"] and lines[29].split("\t")[1] == "verb.body"
    assert "teacher" in augment._synonyms("instructor")


def test_english_reader_answers_like_nltks_own():
    """The reader skips only NLTK's start-up map of other WordNet versions: every English lookup is equal."""
    import warnings

    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    fast = augment.wordnet()  # also puts the corpus folder on NLTK's allowed paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = WordNetCorpusReader(str(augment.wordnet_dir()), None)
    assert fast.map30 is None and plain.map30  # the skipped map is built by the plain reader
    for word in ("instructor", "exam", "held", "mandatory", "submitted", "course", "grade", "late"):
        assert [s.name() for s in fast.synsets(word)] == [s.name() for s in plain.synsets(word)]
        assert [s.lemma_names() for s in fast.synsets(word)] == [s.lemma_names() for s in plain.synsets(word)]
    assert fast.morphy("lectures") == plain.morphy("lectures") == "lecture"


def test_variants_never_touch_numbers_times_dates_codes_or_names():
    changed = 0
    for seed in range(15):
        rng = random.Random(seed)
        for question in QUESTIONS:
            text = augment.variant(question, rng)
            if text is None or text == question:
                continue
            changed += 1
            assert _protected(text) == _protected(question), (question, text)
            assert len(question.split()) <= len(text.split()) <= len(question.split()) + 2
    assert changed >= 40


def test_rewordings_are_deterministic_and_leak_free():
    train = [{"id": f"row-{i}", "question": q, "answer": f"A{i}.", "source_row": i} for i, q in enumerate(QUESTIONS)]
    held_out = {question_key("What happens if the homework is turned in 3 days late on 09/12?")}

    def made(seed: int, n: int = 2) -> list[dict]:
        taken = {question_key(p["question"]) for p in train} | held_out
        return augment.rewordings(train, n, seed, taken, method="wordnet")

    first = made(42)
    assert first == made(42)
    assert first != made(43)
    by_id = {p["id"]: p for p in train}
    assert len(first) >= 8
    for row in first:
        source = by_id[row["augmented_from"]]
        assert row["id"].startswith(source["id"] + "-aug") and row["answer"] == source["answer"]
        assert row["source_row"] == source["source_row"] and row["question"] != source["question"]
        assert question_key(row["question"]) not in held_out
    assert len({question_key(r["question"]) for r in first}) == len(first)
    assert made(42, n=0) == []


def test_missing_wordnet_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QATUNE_HOME", str(tmp_path / "home"))
    with pytest.raises(QatuneError, match="apt-get install wordnet-base wordnet-sense-index"):
        augment.wordnet_dir(source=tmp_path / "no-wordnet")
    assert not (tmp_path / "home" / "nltk_data" / "corpora" / "wordnet").exists()
