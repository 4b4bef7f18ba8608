"""Stage entry of `qatune report`: RUN/report/report.html (one self-contained file, every value escaped by
Jinja2 autoescape, charts embedded as data URIs) plus results.csv/.md, recommendation.json and the PNGs."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

from qatune import __version__
from qatune.report import plots, tables, training
from qatune.report.load import EvalSet, RunData, kind_of, load_run, model_order, number
from qatune.report.recommend import SMALL_N, recommend
from qatune.report.trust import trust_view
from qatune.storage import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from qatune.train.state import TrainSummary

MAX_DROPPED_SHOWN = 200
MAX_QUESTIONS_SHOWN = 500
ANSWER_METRICS = ("rougeL", "bleu", "semantic", "token_f1")


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", _plain(value)))
    return rows


def _split_rows(report: dict[str, Any], splits: dict[str, Any]) -> list[tuple[str, str]]:
    """The prepare summary's labelled counts where the report has them, else the raw split sizes."""
    from qatune.data.summary import counts

    try:
        rows = counts(report, 0)[1:-3]  # the splits: no total, dropped or blank rows, warnings
    except (KeyError, TypeError):
        return [(k, _plain(v)) for k, v in splits.items()]
    return [(label, _plain(value)) for label, value in rows]


def _data_view(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    dropped = [d for d in report.get("dropped") or [] if isinstance(d, dict)]
    splits = report.get("splits") if isinstance(report.get("splits"), dict) else {}
    source = report.get("source") if isinstance(report.get("source"), dict) else {}
    return {
        "valid_pairs": _plain(report.get("valid_pairs")),
        "splits": _split_rows(report, splits),
        "source": [(k, _plain(v)) for k, v in source.items()],
        "dropped": [(_plain(d.get("row")), _plain(d.get("reason"))) for d in dropped[:MAX_DROPPED_SHOWN]],
        "dropped_total": len(dropped),
        "warnings": [_plain(w) for w in report.get("warnings") or []],
    }


def _answers(ev: EvalSet, summary: TrainSummary | None) -> list[dict[str, Any]]:
    """Question cards: reference then each model's answer with its own scores, in model order."""
    cards: dict[str, dict[str, Any]] = {}
    for g in ev.generations:
        qid = str(g.get("question_id", g.get("question", "")))
        card = cards.setdefault(
            qid, {"question": _plain(g.get("question")), "reference": _plain(g.get("reference")), "answers": {}}
        )
        model = str(g.get("model", "?"))
        scores = g.get("metrics") if isinstance(g.get("metrics"), dict) else {}
        card["answers"][model] = {
            "name": tables.display_name(model, summary),
            "kind": kind_of(ev.scores, model),
            "text": _plain(g.get("answer")),
            "scores": [tables.fmt(number(scores.get(m))) for m in ANSWER_METRICS],
            "stopped": {True: "yes", False: "no"}.get(g.get("stopped"), "–"),
            "tokens": _plain(g.get("new_tokens")),
        }
    if not cards:
        return _combined_answers(ev)
    out = []
    for card in list(cards.values())[:MAX_QUESTIONS_SHOWN]:
        order = model_order(list(card["answers"]))
        out.append({**card, "answers": [card["answers"][m] for m in order]})
    return out


def _combined_answers(ev: EvalSet) -> list[dict[str, Any]]:
    """Fallback when generations.jsonl is missing: the seed-shaped combined_responses.json, unscored."""
    out = []
    for c in ev.combined[:MAX_QUESTIONS_SHOWN]:
        tuned = c.get("fine_tuned_model_responses") if isinstance(c.get("fine_tuned_model_responses"), dict) else {}
        answers = [("base", c.get("base_model_response")), *tuned.items()]
        out.append(
            {
                "question": _plain(c.get("question")),
                "reference": _plain(c.get("reference_answer")),
                "answers": [
                    {
                        "name": str(m),
                        "kind": {"base": "base", "retrieval": "baseline"}.get(m, "fine-tuned"),
                        "text": _plain(a),
                        "scores": ["–"] * len(ANSWER_METRICS),
                        "stopped": "–",
                        "tokens": "–",
                    }
                    for m, a in answers
                ],
            }
        )
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _about(name: str, report: dict[str, Any] | None) -> str | None:
    """What an eval set asks: generated rewordings of trained questions, facts never trained, or a file."""
    if name == "unseen":
        return (
            "Questions whose facts were held out of training (--test-frac): the saved models were never shown "
            "them, so this set shows whether a model says so or invents an answer."
        )
    if name == "unanswerable":
        how = {
            "generated": " This set was generated by qatune (off-topic questions, details FAQs often leave out, and "
            "near misses of your questions); give your own with --unanswerable FILE.",
            "example": " This is the example data's own hand-written set.",
        }.get((report or {}).get("unanswerable_kind") or "", "")
        return "Questions the data does not answer: the right response is to abstain." + how
    if name == "test" and (report or {}).get("test_kind") == "generated":
        return (
            "Generated rewordings of training questions (held out of training): does the model recall "
            "trained facts when asked in other words? Give your own questions with --test for a stronger check."
        )
    return None


def _eval_view(
    ev: EvalSet, summary: TrainSummary | None, images: dict[str, bytes], about: str | None = None
) -> dict[str, Any]:
    charts = []
    for key, title, png in (
        ("rouge_bars", "ROUGE F1 by model (averaged over questions)", plots.rouge_bars(ev.scores, summary)),
        ("metrics_vs_epoch", "Metrics vs epochs", plots.metrics_vs_epoch(ev.scores, summary)),
        ("rougeL_heatmap", "Per-question ROUGE-L", plots.rouge_heatmap(ev.generations, ev.scores, summary)),
    ):
        if png:
            images[f"{ev.name}_{key}.png"] = png
            charts.append({"title": title, "uri": _uri(png), "file": f"{ev.name}_{key}.png"})
    n = number(ev.scores.get("n"))
    warnings = [_plain(w) for w in ev.scores.get("warnings") or []]
    if n is not None and n < SMALL_N:
        warnings = [w for w in warnings if f"only {int(n)} questions" not in w.lower()]
        warnings.insert(
            0,
            f"Only {int(n)} questions: with n < {SMALL_N} the 95% confidence intervals are wide; "
            "small differences between models are not evidence.",
        )
    unavailable = _mapping(ev.scores.get("unavailable"))
    metrics = tables.metric_columns(ev.scores)
    results = tables.result_rows(ev, summary)
    return {
        "name": ev.name,
        "n": "?" if n is None else int(n),
        "source": _plain(ev.scores.get("source")),
        "warnings": warnings,
        "unavailable": [(tables.label(k), _plain(v)) for k, v in unavailable.items()],
        "metric_labels": [tables.label(m) for m in metrics],
        "metrics": metrics,
        "results": results,
        "has_corpus_bleu": any(r["corpus_bleu"] is not None for r in results),
        "notes": [(k, _plain(v)) for k, v in _mapping(ev.scores.get("notes")).items()],
        "comparisons": tables.comparison_rows(ev, summary),
        "vs_retrieval": tables.retrieval_rows(ev, summary),
        "ceiling": tables.ceiling_note(ev.scores),
        "trust": trust_view(ev.scores, lambda m: tables.display_name(m, summary)),
        "quoted": [(tables.display_name(m, summary), int(k)) for m, k in _mapping(ev.scores.get("quoted")).items()],
        "chosen": [(tables.display_name(m, summary), int(k)) for m, k in _mapping(ev.scores.get("chosen")).items()],
        "about": about,
        "charts": charts,
        "answers": _answers(ev, summary),
        "answer_metric_labels": [tables.label(m) for m in ANSWER_METRICS],
        "parts": tables.stat_parts,
        "fmt": tables.fmt,
    }


def _render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("template.html").render(**context)


def _context(data: RunData, rec: dict[str, Any], images: dict[str, bytes]) -> dict[str, Any]:
    summary = data.summary
    loss_png = plots.loss_curves(data.metrics, summary)
    if loss_png:
        images["loss_curves.png"] = loss_png
    config = data.config or {}
    return {
        "run": str(data.rundir.root),
        "version": __version__,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "missing": data.missing,
        "rec": rec,
        "rec_notes": [_plain(n) for n in rec["evidence"].get("notes", [])],
        "data": _data_view(data.data_report),
        "model": _plain(config.get("model")) if config else None,
        "config_rows": _flatten({k: v for k, v in config.items() if k != "eval"}),
        "summary_rows": training.summary_rows(summary) if summary and data.summary_json else None,
        "summary_json": training.raw_json(data.summary_json) if data.summary_json else None,
        "val_losses": training.val_losses(summary) if summary else [],
        "loss_uri": _uri(loss_png) if loss_png else None,
        "evals": [_eval_view(ev, summary, images, _about(ev.name, data.data_report)) for ev in data.evals],
    }


def build(run: str | Path) -> Path:
    """Write RUN/report/ from whatever the run holds; a partial run gets a partial report, never a crash."""
    data = load_run(run)
    primary = data.evals[0] if data.evals else None
    others = {ev.name: ev.scores for ev in data.evals[1:]}
    rec = recommend(primary.scores if primary else None, data.summary, primary.name if primary else "test", others)
    images: dict[str, bytes] = {}
    page = _render(_context(data, rec, images))
    with atomic_dir(data.rundir.report_dir) as folder:
        for name, png in images.items():
            atomic_write_bytes(folder / name, png)
        atomic_write_text(folder / "results.md", tables.markdown(data.evals, data.summary))
        atomic_write_text(folder / "results.csv", tables.csv_text(data.evals, data.summary))
        atomic_write_json(folder / "recommendation.json", rec)
        atomic_write_text(folder / "report.html", page)
    return data.rundir.report_html
