"""Small data sets cut from the example syllabus shipped inside the package, for the tests that run the real
default model: the first pairs of example_qa.xlsx as a CSV, and held-out rewordings of their facts from
example_test.csv."""

from __future__ import annotations

import csv
from pathlib import Path


def example_pairs(n: int) -> list[dict]:
    """The first `n` pairs of the example spreadsheet, as prepare reads them."""
    from qatune.config import Config
    from qatune.data.prepare import example_data_path, load_questions

    return load_questions(example_data_path(), Config())[:n]


def reworded_questions(pairs: list[dict], n: int) -> list[dict]:
    """Up to `n` of the example test questions whose reference answer is one of `pairs`' answers."""
    from qatune.config import Config
    from qatune.data.prepare import example_test_path, load_questions

    answers = {p["answer"] for p in pairs}
    return [q for q in load_questions(example_test_path(), Config()) if q["answer"] in answers][:n]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer"])
        writer.writerows((r["question"], r["answer"]) for r in rows)
    return path
