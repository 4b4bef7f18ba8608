"""Retrieval-aware training examples (grounded models): each training pair asked once more with the top-k
retrieved training pairs in its prompt, the pair itself among them in most examples and only distractors in
the rest, in shuffled order, so one adapter answers both closed-book and with retrieved context."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from qatune.console import warn
from qatune.rag.index import DEFAULT_K, run_index
from qatune.rag.prompt import grounded_question
from qatune.rundir import RunDir
from qatune.storage import read_jsonl, write_jsonl

GROUNDED_FILE = "grounded.jsonl"


def grounded_questions(rows: list[dict]) -> list[dict]:
    """The training pairs asked grounded, one per original pair: its first rewording when prepare made one."""
    reworded: dict[str, dict] = {}
    for row in rows:
        if row.get("augmented_from"):
            reworded.setdefault(str(row["augmented_from"]), row)
    return [reworded.get(str(row["id"]), row) for row in rows if not row.get("augmented_from")]


def write_grounded_split(
    rundir: RunDir,
    seed: int,
    k: int = DEFAULT_K,
    fits: Callable[[str, str], bool] | None = None,
    oracle_share: float = 0.8,
    refusals: list[dict] | None = None,
    refusal: str = "",
    shorten: Callable[[str], str] | None = None,
) -> Path:
    """RUN/train/grounded.jsonl, built from RUN/data/train.jsonl and the run's retrieval index.

    A pair is asked in a reworded form when prepare made one (retrieval then works as it will for a
    user's question) and the answer is always the trained one, also when the context lacks it (the share
    `1 - oracle_share` of the examples holds distractors only). When
    `fits(question, answer)` says an example would not fit the training length, distractors are left out
    of its context (then the pair itself); one that fits with no context is not written. Each of `refusals`
    (questions the data does not answer) is asked with its top-k retrieved pairs and answered with `refusal`.
    `shorten` cuts each retrieved answer in a prompt (long answers: the example then costs a fraction)."""
    from qatune.rag.embeddings import load_embedder

    def ask(question: str, context: list[dict]) -> str:
        return grounded_question(question, context, shorten)

    embedder = load_embedder()
    index = run_index(rundir, embedder, k)
    asked = grounded_questions(read_jsonl(rundir.split_file("train")))
    hits = index.search(embedder, [r["question"] for r in asked], k + 1)
    out = []
    for row, found in zip(asked, hits, strict=True):
        own = str(row.get("augmented_from") or row["id"])
        rng = random.Random(f"{seed}:grounded:{own}")
        others = [index.pairs[j] for j, _ in found if index.pairs[j]["id"] != own]
        mine = [p for p in index.pairs if p["id"] == own]
        context = mine + others[: k - 1] if mine and rng.random() < oracle_share else others[:k]
        rng.shuffle(context)
        question = ask(row["question"], context)
        while fits is not None and not fits(question, row["answer"]) and context:
            context.remove(next((p for p in context if p["id"] != own), context[0]))
            question = ask(row["question"], context) if context else ""
        if question:
            out.append({"id": f"{own}-rag", "question": question, "answer": row["answer"], "grounded": True})
    refused = list(refusals or [])
    for row, context in zip(refused, index.contexts(embedder, [r["question"] for r in refused], k), strict=True):
        question = ask(row["question"], context)
        while fits is not None and not fits(question, refusal) and len(context) > 1:
            context = context[:-1]
            question = ask(row["question"], context)
        out.append({"id": f"refuse-{row['id']}-rag", "question": question, "answer": refusal, "refusal": True})
    if len(out) < len(asked) + len(refused):
        warn(
            f"{len(asked) + len(refused) - len(out)} grounded example(s) left out: too long for --max-length "
            "with any context"
        )
    path = rundir.train_dir / GROUNDED_FILE
    write_jsonl(path, out)
    return path
