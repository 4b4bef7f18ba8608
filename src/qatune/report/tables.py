"""Results tables from scores.json: the seed's Table 2 layout (model | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU)
plus every other metric with its 95% CI, one block per eval set, as rows, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from qatune.rag import RAG_SUFFIX, is_grounded
from qatune.report.load import EvalSet, comparison, epoch_of, kind_of, load_run, model_order, number, stat
from qatune.train.state import TrainSummary

SEED_METRICS = ["rouge1", "rouge2", "rougeL", "bleu"]
LABELS = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bleu": "BLEU",
    "semantic": "semantic sim.",
    "token_f1": "token F1",
    "exact_match": "exact match",
    "answer_nll": "answer NLL",
    "bertscore": "BERTScore",
}
LOWER_IS_BETTER = {"answer_nll"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def metric_columns(scores: dict[str, Any]) -> list[str]:
    """The seed's four metrics first, then the others in scores.json's order."""
    names = [m for m in scores.get("metrics") or [] if isinstance(m, str)]
    for per_model in (scores.get("models") or {}).values():
        names += [m for m in (per_model or {}) if isinstance(m, str)]
    names = list(dict.fromkeys(names))
    return [m for m in SEED_METRICS if m in names] + [m for m in names if m not in SEED_METRICS]


def models_of(ev: EvalSet) -> list[str]:
    names = list(ev.scores.get("models") or {}) + [str(g.get("model")) for g in ev.generations if g.get("model")]
    return model_order(names)


def display_name(model: str, summary: TrainSummary | None) -> str:
    """`best` shows which epoch it is a copy of."""
    rag = RAG_SUFFIX if is_grounded(model) else ""
    epoch = epoch_of(model, summary) if model.removesuffix(rag) == "best" else None
    return f"best{rag} (= epoch-{epoch}{rag})" if epoch is not None else model


def model_label(model: str, kind: str, summary: TrainSummary | None) -> str:
    """The name used in plain-text tables and charts, marking baselines."""
    name = display_name(model, summary)
    return f"{name} (baseline)" if kind == "baseline" else name


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_stat(entry: tuple[float, float | None, float | None] | None) -> str:
    """'0.45 [0.38, 0.52]', or the mean alone when no CI was saved."""
    if entry is None:
        return "–"
    mean, lo, hi = entry
    if lo is None or hi is None:
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def stat_parts(entry: tuple[float, float | None, float | None] | None, signed: bool = False) -> tuple[str, str]:
    """('0.45', '[0.38, 0.52]') for two-line HTML cells; signed adds '+' to positive values."""
    if entry is None:
        return "–", ""
    mean, lo, hi = entry
    head = ("+" if signed and mean >= 0 else "") + fmt(mean)
    return head, "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def stop_rate(ev: EvalSet, model: str) -> float | None:
    """Share of answers that ended at EOS; from scores.json, else counted in generations.jsonl."""
    saved = number((ev.scores.get("stop_rate") or {}).get(model))
    if saved is not None:
        return saved
    flags = [g.get("stopped") for g in ev.generations if g.get("model") == model]
    flags = [f for f in flags if isinstance(f, bool)]
    return sum(flags) / len(flags) if flags else None


def result_rows(ev: EvalSet, summary: TrainSummary | None) -> list[dict[str, Any]]:
    """One row per model: label, kind, {metric: (mean, lo, hi) | None}, stop rate."""
    metrics = metric_columns(ev.scores)
    rows = []
    for model in models_of(ev):
        kind = kind_of(ev.scores, model)
        rows.append(
            {
                "model": model,
                "kind": kind,
                "label": model_label(model, kind, summary),
                "name": display_name(model, summary),
                "stats": {m: stat(ev.scores, model, m) for m in metrics},
                "stop_rate": stop_rate(ev, model),
                "corpus_bleu": number((ev.scores.get("corpus_bleu") or {}).get(model)),
            }
        )
    return rows


def verdict(metric: str, diff: float, lo: float | None, hi: float | None) -> str:
    """'better', 'worse' or 'unclear' vs base: significant only when the 95% CI excludes zero."""
    if lo is None or hi is None or lo <= 0 <= hi:
        return "unclear"
    up = lo > 0
    return "better" if up != (metric in LOWER_IS_BETTER) else "worse"


def retrieval_rows(ev: EvalSet, summary: TrainSummary | None) -> list[dict[str, Any]]:
    """Closed-book and grounded models against the retrieval baseline (paired ROUGE-L and semantic
    similarity differences with 95% CIs), from scores.json's `vs_retrieval`."""
    table = ev.scores.get("vs_retrieval") or {}
    rows = []
    for model in models_of(ev):
        entry = table.get(model)
        if not isinstance(entry, dict):
            continue
        cells = {}
        for m in ("rougeL", "semantic"):
            c = entry.get(m)
            diff = number(c.get("diff")) if isinstance(c, dict) else None
            if diff is None:
                cells[m] = None
                continue
            lo, hi = (list(c.get("ci95") or []) + [None, None])[:2]
            head, ci = stat_parts((diff, number(lo), number(hi)), signed=True)
            cells[m] = {"head": head, "ci": ci, "verdict": verdict(m, diff, number(lo), number(hi))}
        style = "grounded (retrieved context)" if is_grounded(model) else "closed-book"
        rows.append({"name": display_name(model, summary), "style": style, "cells": cells})
    return rows


def ceiling_note(scores: dict[str, Any]) -> str | None:
    """One sentence on how far a grounded model could pass retrieval on this set (scores.json's
    `retrieval_ceiling`): None when the eval did not record the retrieved runners-up."""
    ceiling = scores.get("retrieval_ceiling")
    if not isinstance(ceiling, dict) or not isinstance(ceiling.get("rougeL"), dict):
        return None
    best = number(ceiling["rougeL"].get("mean"))
    lo, hi = ([number(v) for v in ceiling["rougeL"].get("ci95") or []] + [None, None])[:2]
    k, first, n = number(ceiling.get("k")), number(ceiling.get("first_is_best")), number(scores.get("n"))
    own = stat(scores, "retrieval", "rougeL")
    if best is None or k is None or first is None or n is None or own is None:
        return None
    head = (
        f"Retrieval ceiling: copying the best of the {int(k)} retrieved training answers of each question "
        f"(picked with the reference) would score ROUGE-L {fmt_stat((best, lo, hi))}, retrieval {fmt(own[0])}. "
    )
    if first >= n:
        return head + (
            f"Retrieval's first answer is that best one on all {int(n)} questions: a grounded model can at most "
            "tie retrieval here."
        )
    return head + (
        f"Retrieval's first answer is that best one on {int(first)} of {int(n)} questions, where a grounded "
        f"model can at most tie it; it can pass retrieval only on the other {int(n - first)}."
    )


def comparison_rows(ev: EvalSet, summary: TrainSummary | None) -> list[dict[str, Any]]:
    """Each model vs base (paired): {metric: {text, p, verdict}} for the HTML comparisons table."""
    metrics = metric_columns(ev.scores)
    rows = []
    for model in models_of(ev):
        if model == "base":
            continue
        cells = {}
        for m in metrics:
            c = comparison(ev.scores, model, m)
            if c is None:
                cells[m] = None
                continue
            diff, lo, hi, p = c
            sign = "+" if diff >= 0 else ""
            head, ci = stat_parts((diff, lo, hi), signed=True)
            cells[m] = {
                "text": sign + fmt_stat((diff, lo, hi)),
                "head": head,
                "ci": ci,
                "p": fmt_p(p),
                "verdict": verdict(m, diff, lo, hi),
            }
        if any(cells.values()):
            kind = kind_of(ev.scores, model)
            rows.append(
                {
                    "model": model,
                    "label": model_label(model, kind, summary),
                    "kind": kind,
                    "name": display_name(model, summary),
                    "cells": cells,
                }
            )
    return rows


def metric_means(scores: dict[str, Any], models: list[str], metrics: list[str]) -> dict[str, dict[str, Any]]:
    """{model: {metric: (mean, lo, hi) | None}}: means over questions as saved in scores.json."""
    return {model: {m: stat(scores, model, m) for m in metrics} for model in models}


def _n(ev: EvalSet) -> str:
    n = number(ev.scores.get("n"))
    return f"n = {int(n)}" if n is not None else "n unknown"


def _md(text: str) -> str:
    """A table cell: pipes and HTML escaped (Markdown renderers pass raw HTML through), one line."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def markdown(evals: list[EvalSet], summary: TrainSummary | None) -> str:
    """Results in Markdown: per eval set, the scores table then the paired change vs base."""
    if not evals:
        return "No evaluation results yet: run `qatune eval`.\n"
    parts = []
    for ev in evals:
        metrics = metric_columns(ev.scores)
        heads = ["model", *(label(m) for m in metrics), "stop rate"]
        parts.append(f"### {_md(ev.name)} ({_n(ev)}, mean [95% CI])\n")
        parts.append("| " + " | ".join(heads) + " |")
        parts.append("|" + "---|" * len(heads))
        for row in result_rows(ev, summary):
            cells = [_md(row["label"]), *(fmt_stat(row["stats"][m]) for m in metrics), fmt(row["stop_rate"])]
            parts.append("| " + " | ".join(cells) + " |")
        comp = comparison_rows(ev, summary)
        if comp:
            parts.append(f"\nChange vs base on {_md(ev.name)} (paired difference [95% CI], p):\n")
            heads = ["model", *(label(m) for m in metrics)]
            parts.append("| " + " | ".join(heads) + " |")
            parts.append("|" + "---|" * len(heads))
            for row in comp:
                cells = [f"{c['text']}, p {c['p']}" if c else "–" for c in (row["cells"][m] for m in metrics)]
                parts.append("| " + " | ".join([_md(row["label"]), *cells]) + " |")
        ceiling = ceiling_note(ev.scores)
        if ceiling:
            parts.append(f"\n{_md(ceiling)}")
        parts.append("")
    return "\n".join(parts)


def csv_text(evals: list[EvalSet], summary: TrainSummary | None) -> str:
    """Machine-readable results: one row per eval set x model, each metric as mean, CI low, CI high."""
    all_metrics = list(dict.fromkeys(m for ev in evals for m in metric_columns(ev.scores)))
    heads = ["eval_set", "n", "model", "kind"]
    for m in all_metrics:
        heads += [label(m), f"{label(m)} CI low", f"{label(m)} CI high"]
    heads += ["stop rate", "corpus BLEU"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(heads)
    for ev in evals:
        n = number(ev.scores.get("n"))
        for row in result_rows(ev, summary):
            cells: list[Any] = [ev.name, "" if n is None else int(n), row["label"], row["kind"]]
            for m in all_metrics:
                entry = row["stats"].get(m) or (None, None, None)
                cells += ["" if v is None else round(v, 4) for v in entry]
            cells += ["" if row[k] is None else round(row[k], 4) for k in ("stop_rate", "corpus_bleu")]
            writer.writerow(cells)
    return buf.getvalue()


def results_markdown(run: str | Path) -> str:
    """The results tables of a run as Markdown (the report and the model card share it)."""
    data = load_run(run)
    return markdown(data.evals, data.summary)
