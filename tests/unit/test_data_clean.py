"""Cleaning: whitespace, blank rows, empty cells, duplicates, conflicting answers, over-long pairs."""

from __future__ import annotations

import json

from qatune.data.clean import clean_rows, clean_text, length_warnings, question_key, token_counter
from qatune.data.table import RawRow


def test_clean_text_spaces_and_line_breaks():
    raw = "\u00a0 What\u2003 is\t the  \u200bcourse\u202f code?\n(DSC 310)\u00a0 "
    assert clean_text(raw) == "What is the course code? (DSC 310)"
    answer = "  First line\u00a0\u00a0here.  \r\n\r\n\r\n\r\n  Second   line.\rThird\u2028line\x00. \n"
    assert clean_text(answer, multiline=True) == "First line here.\n\nSecond line.\nThird\nline."
    assert clean_text("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert clean_text("Cafe\u0301?") == "Café?"  # NFC


def test_question_key_ignores_case_punctuation_and_spacing():
    assert question_key("What is  the Late-Policy?") == question_key("what is the late policy")
    assert question_key("What is the late policy?") != question_key("What is the grading policy?")
    assert question_key("Ｑ１？") == "q1"  # full-width forms fold


def _rows(*items):
    return [RawRow(row, q, a, problem) for row, q, a, problem in items]


def test_blank_empty_duplicate_and_problem_rows():
    rows = _rows(
        (2, "Q1?", "A1.", None),
        (3, "  ", "\u00a0", None),
        (4, "Q2?", " ", None),
        (5, None, "A3.", None),
        (6, " Q1? ", "A1.", None),
        (7, "Q4?", "A4.", "answer is a list, not text"),
        (8, "Q1?", "a1.", None),
    )
    out = clean_rows(rows, blank_rows=2)
    assert [(p["id"], p["source_row"], p["question"], p["answer"]) for p in out.pairs] == [
        ("row-2", 2, "Q1?", "A1."),
        ("row-8", 8, "Q1?", "a1."),
    ]
    assert out.dropped == [
        {"row": 4, "reason": "empty answer"},
        {"row": 5, "reason": "empty question"},
        {"row": 6, "reason": "duplicate of row 2"},
        {"row": 7, "reason": "answer is a list, not text"},
    ]
    assert out.blank_rows == 3
    assert len(out.warnings) == 1 and "rows 2, 8 ask the same question with different answers" in out.warnings[0]


def test_conflict_warnings_are_bounded():
    rows = _rows(*[(i, f"Q{i // 2}?", f"A{i}.", None) for i in range(2, 60)])
    out = clean_rows(rows, label="test file: ")
    assert len(out.pairs) == 58 and len(out.warnings) == 11
    assert all(w.startswith("test file: ") for w in out.warnings)
    assert "19 more questions" in out.warnings[-1]


def test_length_warnings_estimate_without_a_local_model(tmp_path):
    pairs = [
        {"question": "Short?", "answer": "Yes.", "source_row": 2},
        {"question": "Long?", "answer": "word " * 3000, "source_row": 3},
    ]
    count, how, context = token_counter(str(tmp_path / "no-such-model"))
    assert "estimated" in how and context is None and count("abcdefgh") == 2
    warnings = length_warnings(pairs, str(tmp_path / "no-such-model"), max_length=512)
    assert len(warnings) == 1 and "rows 3" in warnings[0] and "512 tokens" in warnings[0]
    assert length_warnings(pairs[:1], "hub/model-id", max_length=512) == []


def test_length_warnings_use_a_local_tokenizer_and_context(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "a": 1, "b": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "model"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    count, how, context = token_counter(str(folder))
    assert how == "by the model's tokenizer" and context == 64 and count("a b a b") == 4
    # 40 one-token words: fits 512 by the estimate's count (50 characters), not the 64-token context.
    pairs = [{"question": "a " * 20, "answer": "b " * 20, "source_row": 9}]
    warnings = length_warnings(pairs, str(folder), max_length=512)
    assert len(warnings) == 1 and "longer than 64 tokens (by the model's tokenizer)" in warnings[0]
