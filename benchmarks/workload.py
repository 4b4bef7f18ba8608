"""The data every CPU benchmark uses: question/answer pairs from the seed's QA_dataset.json (or qatune's
example spreadsheet when the seed folder is not beside the checkout), split into training pairs and held-out
questions, the same for both sides of every comparison."""

from __future__ import annotations

import json
from pathlib import Path

from record import REPO

SEED_DATASET = REPO.parent / "shared" / "seed" / "QA_dataset.json"


def _unique_pairs() -> tuple[list[tuple[str, str]], str]:
    if SEED_DATASET.is_file():
        rows = json.loads(SEED_DATASET.read_text(encoding="utf-8"))
        raw = [(r["question"], r["answer"]) for r in rows]
        source = str(SEED_DATASET)
    else:
        import pandas as pd

        path = REPO / "src" / "qatune" / "examples" / "example_qa.xlsx"
        frame = pd.read_excel(path)
        raw = list(zip(frame.iloc[:, 0].astype(str), frame.iloc[:, 1].astype(str), strict=True))
        source = str(path)
    seen: set[str] = set()
    pairs = []
    for q, a in raw:
        q, a = " ".join(str(q).split()), " ".join(str(a).split())
        if q and a and q.lower() not in seen:
            seen.add(q.lower())
            pairs.append((q, a))
    return pairs, source


def training_pairs(n: int) -> tuple[list[tuple[str, str]], str]:
    """The first `n` distinct pairs."""
    pairs, source = _unique_pairs()
    return pairs[:n], source


def validation_pairs(n: int, after: int) -> list[tuple[str, str]]:
    """`n` distinct pairs following the first `after` (the training pairs)."""
    pairs, _ = _unique_pairs()
    return pairs[after : after + n]


def eval_questions(n: int) -> tuple[list[tuple[str, str]], str]:
    """`n` pairs from the end of the data set (paraphrases the training pairs do not contain)."""
    pairs, source = _unique_pairs()
    return pairs[-n:], source


def write_run_data(run: Path, train: list[tuple[str, str]], val: list[tuple[str, str]]) -> None:
    """A run directory with data/train.jsonl and val.jsonl as `qatune prepare` writes them."""
    from qatune.rundir import RunDir
    from qatune.storage import write_jsonl

    rundir = RunDir(run)
    rundir.data_dir.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("val", val), ("test", [])):
        rows = [
            {"id": f"{name}-{i}", "question": q, "answer": a, "source_row": i + 2} for i, (q, a) in enumerate(pairs)
        ]
        write_jsonl(rundir.split_file(name), rows)
