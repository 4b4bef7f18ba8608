"""The trust table of scores.json: for the questions the data answers, how often each model answered with no
wrong key fact, answered with a wrong one, or abstained; for the questions it does not answer, how often each
model abstained or invented an answer (and stated an invented key fact), with 95% CIs and quoted examples."""

from __future__ import annotations

from typing import Any

from qatune.evaluate.compare import mean_ci
from qatune.trust.facts import key_facts, supports

EXAMPLES = 3


def _share(flags: list[bool], resamples: int) -> dict[str, Any]:
    stat = mean_ci([float(f) for f in flags], resamples)
    return {**stat, "count": sum(flags)}


def _states_a_fact(row: dict) -> list[str]:
    """Key facts an answer to an unanswerable question states that the question does not hold."""
    asked = key_facts(row["question"])
    return [f.text for f in key_facts(row["answer"]) if not supports(f, asked)]


def trust_table(rows_by_model: dict[str, list[dict]], resamples: int) -> dict[str, Any]:
    """Per model: `answerable` {n, right, wrong_fact, abstained} and `unanswerable` {n, abstained, invented,
    invented_fact}, each a share with its CI and count; `abstained_by` counts; `examples` of invented answers and
    of answers with a wrong key fact."""
    table: dict[str, Any] = {}
    for model, rows in rows_by_model.items():
        known = [r for r in rows if r.get("answerable") is not False]
        unknown = [r for r in rows if r.get("answerable") is False]
        abstained = [bool(r.get("abstained")) for r in known]
        wrong = [not a and bool(r["metrics"].get("wrong_fact")) for r, a in zip(known, abstained, strict=True)]
        entry: dict[str, Any] = {"abstained_by": _by(rows)}
        if known:
            entry["answerable"] = {
                "n": len(known),
                "right": _share([not a and not w for a, w in zip(abstained, wrong, strict=True)], resamples),
                "wrong_fact": _share(wrong, resamples),
                "abstained": _share(abstained, resamples),
            }
        if unknown:
            refused = [bool(r.get("abstained")) for r in unknown]
            invented = [r for r, a in zip(unknown, refused, strict=True) if not a]
            entry["unanswerable"] = {
                "n": len(unknown),
                "abstained": _share(refused, resamples),
                "invented": _share([not a for a in refused], resamples),
                "invented_fact": _share(
                    [not a and bool(_states_a_fact(r)) for r, a in zip(unknown, refused, strict=True)], resamples
                ),
            }
            entry["invented_examples"] = [
                {"question": r["question"], "answer": r["answer"], "facts": _states_a_fact(r)}
                for r in sorted(invented, key=lambda r: -len(_states_a_fact(r)))[:EXAMPLES]
            ]
        entry["wrong_fact_examples"] = [
            {"question": r["question"], "answer": r["answer"], "reference": r["reference"]}
            for r, w in zip(known, wrong, strict=True)
            if w
        ][:EXAMPLES]
        table[model] = entry
    return table


def _by(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        if row.get("abstained"):
            reason = row.get("abstained_by") or "model"
            counts[reason] = counts.get(reason, 0) + 1
    return counts
