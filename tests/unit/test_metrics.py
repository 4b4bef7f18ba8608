"""Per-answer metric wrappers against values worked out by hand."""

from __future__ import annotations

import pytest

from qatune.evaluate import metrics as M


def test_rouge_f1_of_known_strings():
    # unigrams: the x2, cat, on, mat shared -> 5 of 6 each way; bigrams: the-cat, on-the, the-mat -> 3 of 5
    scores = M.rouge("The cat sat on the mat", "the cat is on the mat")
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)  # LCS: the cat on the mat
    assert M.rouge("Lectures running", "lecture runs")["rouge1"] == 1.0  # Porter stemmer on
    assert M.rouge("", "anything")["rouge1"] == 0.0


def test_bleu_identical_is_one_and_disjoint_is_zero():
    assert M.sentence_bleu(
        "The final project is worth forty percent.", "The final project is worth forty percent."
    ) == pytest.approx(1.0)
    assert M.sentence_bleu("alpha beta gamma delta", "one two three four") == pytest.approx(0.0, abs=1e-9)
    assert (
        0.0
        < M.sentence_bleu("the final project counts forty percent", "the final project is worth forty percent")
        < 1.0
    )
    refs = ["the course is deep learning today", "homework counts for forty percent"]
    assert M.corpus_bleu(refs, refs) == pytest.approx(1.0)
    assert M.corpus_bleu([], []) is None


def test_squad_normalization_exact_match_and_token_f1():
    # lowercase, punctuation out (even inside words), articles out ("an", "a"), whitespace collapsed
    assert M.normalize_answer("  The  Deep-Learning course, an A+ grade!") == "deeplearning course grade"
    assert M.exact_match("the Deep Learning.", "Deep learning") == 1.0
    assert M.exact_match("Deep Learning course", "Deep Learning") == 0.0
    # "cat sat" vs "cat sat down": precision 1, recall 2/3 -> F1 0.8
    assert M.token_f1("The Cat sat!", "a cat sat down") == pytest.approx(0.8)
    assert M.token_f1("dog", "cat") == 0.0
    assert M.token_f1("the", "a") == 1.0  # both empty after normalization (SQuAD convention)
    assert M.token_f1("", "cat") == 0.0


def test_answer_metrics_has_every_metric_in_order():
    row = M.answer_metrics("Room 101.", "Room 101", semantic=0.9, answer_nll=1.5)
    assert list(row) == list(M.METRICS)
    assert row["exact_match"] == 1.0 and row["token_f1"] == 1.0 and row["rouge1"] == 1.0
    assert row["semantic"] == 0.9 and row["answer_nll"] == 1.5
    assert M.answer_metrics("x", "y", semantic=None, answer_nll=None)["answer_nll"] is None


def test_bertscore_reports_why_it_is_unavailable(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def installed(flag):
        return lambda name, *a: (object() if flag else None) if name == "bert_score" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", installed(False))
    assert "bert-score" in M.bertscore_unavailable()
    monkeypatch.setattr(importlib.util, "find_spec", installed(True))
    assert "roberta-large" in M.bertscore_unavailable()  # HF cache is empty in tests; no download attempted
