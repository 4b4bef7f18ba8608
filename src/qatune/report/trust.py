"""The report's trust section of an eval set, read from scores.json's `trust` table: per model, how often it
answered with no wrong key fact, answered with a wrong one, or abstained (questions the data answers), and how
often it abstained or invented an answer (questions it does not answer), each with its 95% CI; plus quoted
examples of invented answers and of wrong key facts."""

from __future__ import annotations

from typing import Any

from qatune.report.load import model_order, number
from qatune.trust.guard import FACT_CHECK, KIND_CHECK, MODEL, QUESTION_CHECK, RETRIEVAL_FALLBACK

COLUMNS = (
    ("answerable", "right", "answered, no wrong key fact"),
    ("answerable", "wrong_fact", "answered with a wrong key fact"),
    ("answerable", "abstained", "abstained"),
    ("unanswerable", "abstained", "abstained (right)"),
    ("unanswerable", "invented", "invented an answer"),
)
BY = {  # what made a model abstain (`abstained_by`, trust.guard), as the report names it
    MODEL: "the model's own refusal",
    RETRIEVAL_FALLBACK: "retrieval fallback",
    QUESTION_CHECK: "question check",
    FACT_CHECK: "fact check",
    KIND_CHECK: "kind check",
}


def share_text(stat: Any) -> tuple[str, str]:
    """('62% (23)', '[45%, 77%]') for a share with its CI and count; ('–', '') when absent."""
    if not isinstance(stat, dict) or number(stat.get("mean")) is None:
        return "–", ""
    ci = stat.get("ci95") or [None, None]
    lo, hi = number(ci[0]), number(ci[1])
    count = stat.get("count")
    head = f"{stat['mean']:.0%}" + (f" ({count})" if isinstance(count, int) else "")
    return head, "" if lo is None or hi is None else f"[{lo:.0%}, {hi:.0%}]"


def trust_view(scores: dict[str, Any], display: Any) -> dict[str, Any] | None:
    """Rows, column headers and examples for the template; None when scores.json has no trust table."""
    table = scores.get("trust")
    if not isinstance(table, dict) or not table:
        return None
    parts = [p for p in ("answerable", "unanswerable") if any(isinstance(e.get(p), dict) for e in table.values())]
    columns = [c for c in COLUMNS if c[0] in parts]
    rows, invented, wrong = [], [], []
    for model in model_order(list(table)):
        entry = table[model] if isinstance(table[model], dict) else {}
        by = entry.get("abstained_by") if isinstance(entry.get("abstained_by"), dict) else {}
        rows.append(
            {
                "name": display(model),
                "cells": [share_text((entry.get(part) or {}).get(key)) for part, key, _ in columns],
                "by": ", ".join(f"{BY.get(k, k)} {v}" for k, v in by.items()) or "–",
            }
        )
        for ex in entry.get("invented_examples") or []:
            invented.append({"model": display(model), **ex})
        for ex in entry.get("wrong_fact_examples") or []:
            wrong.append({"model": display(model), **ex})
    n = {p: scores.get(f"n_{p}") for p in parts}
    return {
        "headers": [
            ("questions the data answers" if p == "answerable" else "questions it does not answer", label)
            for p, _, label in columns
        ],
        "rows": rows,
        "n": n,
        "invented": invented[:9],
        "wrong": wrong[:9],
    }
