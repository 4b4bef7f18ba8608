"""The report's charts as PNG bytes (matplotlib Agg, imported inside): loss curves (per-step train loss with an
EMA over it), metrics vs epoch with CI bands, grouped ROUGE bars (averaged over questions, with CIs) and a heatmap."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from qatune.rag import RAG_SUFFIX, is_grounded
from qatune.report.load import epoch_of, kind_of, model_order, number, stat
from qatune.report.tables import LOWER_IS_BETTER, label, metric_columns, model_label
from qatune.train.state import TrainSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_GROUP_KEYS = ("sweep_point", "target_epochs", "run")
BASE_COLOR = "#6b6b6b"
RETRIEVAL_COLOR = "#b5651d"
HEATMAP_MAX_ROWS = 120
HEATMAP_MAX_LABELLED_CELLS = 400


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _model_colors(models: list[str]) -> dict[str, str]:
    import matplotlib

    tuned = [m for m in models if m not in ("base", "retrieval")]
    cmap = matplotlib.colormaps["viridis"]
    colors = {"base": BASE_COLOR, "retrieval": RETRIEVAL_COLOR}
    for i, m in enumerate(tuned):
        colors[m] = matplotlib.colors.to_hex(cmap(0.15 + 0.7 * i / max(1, len(tuned) - 1)))
    return colors


def _series(records: list[dict[str, Any]], field: str) -> dict[str, list[tuple[float, float, float]]]:
    """{sweep point: [(step, epoch, value)]}. Records name their sweep run when runs are independent;
    without a name, steps falling back to the first step start a new run, while a resumed run's rewind
    to a checkpoint re-logs steps, of which the last is kept."""
    groups: dict[str, dict[float, tuple[float, float, float]]] = {}
    first: dict[str, float] = {}
    restarts = 0
    for r in records:
        step, value = number(r.get("step")), number(r.get(field))
        if step is None or value is None:
            continue
        key = next((str(r[k]) for k in _GROUP_KEYS if r.get(k) is not None), None)
        if key is None:
            key = f"run {restarts + 1}" if restarts else ""
            if key in groups and step <= first[key] and step < max(groups[key]):
                restarts += 1
                key = f"run {restarts + 1}"
        first.setdefault(key, step)
        groups.setdefault(key, {})[step] = (step, number(r.get("epoch")) or 0.0, value)
    if restarts and "" in groups:
        groups["run 1"] = groups.pop("")
    return {k: sorted(v.values()) for k, v in groups.items()}


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard smooths): the first points are not
    pulled towards zero, and a constant series stays constant."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def smoothing_weight(points: int) -> float:
    """About a tenth of the run per averaging window (window ~ 1 / (1 - weight)); 0 (no smoothing) when short."""
    window = points / 10
    return 0.0 if window < 2 else min(0.98, 1 - 1 / window)


def loss_curves(metrics: list[dict[str, Any]], summary: TrainSummary | None) -> bytes | None:
    fig = loss_figure(metrics, summary)
    return _png(fig) if fig is not None else None


def loss_figure(metrics: list[dict[str, Any]], summary: TrainSummary | None) -> Figure | None:
    """Train loss per logging step (faint) with its moving average, and validation loss per evaluation, one set
    of lines per sweep run, with a dashed line at each epoch boundary and the saved epoch counts labelled."""
    train, val = _series(metrics, "loss"), _series(metrics, "eval_loss")
    if not train and not val:
        return None
    fig = _figure(10, 4.6)
    ax = fig.add_subplot()
    saved = set(summary.epochs) if summary is not None else set()
    for i, key in enumerate(sorted(set(train) | set(val), key=str)):
        suffix = f" (run to {key} epochs)" if key.isdigit() else f" ({key})" if key else ""
        color = f"C{i}"
        if key in train:
            steps, _, loss = zip(*train[key], strict=True)
            weight = smoothing_weight(len(loss))
            if weight:
                ax.plot(steps, loss, color=color, alpha=0.3, lw=0.8, label="train loss per step" + suffix)
                ax.plot(steps, smooth(list(loss), weight), color=color, lw=1.8, label="train loss, EMA" + suffix)
            else:
                ax.plot(steps, loss, color=color, alpha=0.85, lw=1.2, label="train loss" + suffix)
        if key in val:
            steps, _, loss = zip(*val[key], strict=True)
            ax.plot(steps, loss, "o--", color=color, ms=5, lw=1.6, label="validation loss" + suffix)
    _epoch_markers(ax, next(iter(train.values()), []) or next(iter(val.values()), []), saved)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("Training and validation loss (dashed lines: epoch ends; labelled: saved models)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _epoch_markers(ax: Any, points: list[tuple[float, float, float]], saved: set[int]) -> None:
    """A vertical line at the last step of each whole epoch, found from the logged epoch fractions."""
    ends: dict[int, float] = {}
    for step, epoch, _ in points:
        whole = int(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else None
        if whole and whole >= 1:
            ends.setdefault(whole, step)
    for epoch, step in sorted(ends.items()):
        is_saved = epoch in saved
        ax.axvline(step, color="black" if is_saved else "grey", ls="--", lw=1.0 if is_saved else 0.6, alpha=0.7)
        if is_saved:
            ax.annotate(
                f"epoch-{epoch}",
                (step, 0.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3, 6),
                textcoords="offset points",
                fontsize=8,
                rotation=90,
                ha="right",
                va="bottom",
            )


def metrics_vs_epoch(scores: dict[str, Any], summary: TrainSummary | None) -> bytes | None:
    """One panel per metric: fine-tuned models' mean and 95% CI band over epoch count; base as a grey
    reference line with its CI; retrieval as a dotted baseline."""
    models = [m for m in model_order(list(scores.get("models") or {})) if m.startswith("epoch-")]
    metrics = [m for m in metric_columns(scores) if any(stat(scores, x, m) for x in models)]
    if not models or not metrics:
        return None
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = _figure(3.3 * cols, 2.9 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        _epoch_panel(ax, scores, summary, models, metric)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=4, fontsize=9)
    fig.suptitle("Held-out metrics vs epochs trained (mean and 95% CI)")
    return _png(fig)


def _epoch_panel(ax: Any, scores: dict[str, Any], summary: TrainSummary | None, models: list[str], metric: str) -> None:
    pts: list = []
    for grounded, color, name in (
        (False, "C0", "closed-book (epoch-N)"),
        (True, "C2", f"grounded (epoch-N{RAG_SUFFIX})"),
    ):
        line = [(epoch_of(m), stat(scores, m, metric)) for m in models if is_grounded(m) == grounded]
        line = sorted((e, s) for e, s in line if e is not None and s is not None)
        if not line:
            continue
        pts += line
        xs = [e for e, _ in line]
        ax.plot(xs, [s[0] for _, s in line], "o-", color=color, label=name)
        if all(s[1] is not None and s[2] is not None for _, s in line):
            ax.fill_between(xs, [s[1] for _, s in line], [s[2] for _, s in line], color=color, alpha=0.15)
    base = stat(scores, "base", metric)
    if base:
        ax.axhline(base[0], color=BASE_COLOR, lw=1.5, label="base model")
        if base[1] is not None and base[2] is not None:
            ax.axhspan(base[1], base[2], color=BASE_COLOR, alpha=0.12)
    retrieval = stat(scores, "retrieval", metric)
    if retrieval:
        ax.axhline(retrieval[0], color=RETRIEVAL_COLOR, ls=":", lw=1.8, label="retrieval (baseline)")
    best_epoch = epoch_of("best", summary)
    best = stat(scores, "best", metric)
    if best and best_epoch is not None:
        ax.plot([best_epoch], [best[0]], "*", color="crimson", ms=12, label=f"best (epoch {best_epoch})")
    ax.set_title(label(metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=10)
    ax.set_xlabel("epochs")
    if pts:
        ax.set_xticks(sorted({e for e, _ in pts}))
    ax.grid(alpha=0.3)


def rouge_bar_figure(scores: dict[str, Any], summary: TrainSummary | None) -> Figure | None:
    """The seed's comparison chart done right: ROUGE-1/2/L F1 means over all questions (from scores.json),
    95% CI error bars, for base, retrieval (hatched, a baseline) and each fine-tuned model."""
    rouge = [m for m in ("rouge1", "rouge2", "rougeL")]
    models = [m for m in model_order(list(scores.get("models") or {})) if any(stat(scores, m, r) for r in rouge)]
    if not models:
        return None
    fig = _figure(max(7.0, 1.3 * len(models) + 2), 4.6)
    ax = fig.add_subplot()
    width = 0.26
    for j, metric in enumerate(rouge):
        entries = [stat(scores, m, metric) for m in models]
        heights = [e[0] if e else 0.0 for e in entries]
        lows = [e[0] - e[1] if e and e[1] is not None else 0.0 for e in entries]
        highs = [e[2] - e[0] if e and e[2] is not None else 0.0 for e in entries]
        xs = [i + (j - 1) * width for i in range(len(models))]
        bars = ax.bar(
            xs,
            heights,
            width,
            yerr=[lows, highs],
            capsize=3,
            color=f"C{j}",
            label=label(metric),
            error_kw={"lw": 1, "alpha": 0.8},
        )
        for bar, model, height, up in zip(bars, models, heights, highs, strict=True):
            if kind_of(scores, model) == "baseline":
                bar.set_hatch("//")
                bar.set_edgecolor("white")
            ax.annotate(
                f"{height:.2f}",
                (bar.get_x() + bar.get_width() / 2, height + up),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(models)), [model_label(m, kind_of(scores, m), summary) for m in models], parse_math=False)
    ax.set_ylabel("F1, mean over questions")
    top = max(
        (e[2] if e[2] is not None else e[0]) for m in models for r in rouge if (e := stat(scores, m, r)) is not None
    )
    ax.set_ylim(0, min(1.05, max(0.1, top * 1.25)))
    ax.set_title(f"ROUGE F1 by model (n = {scores.get('n', '?')} questions; bars: 95% CI)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return fig


def rouge_bars(scores: dict[str, Any], summary: TrainSummary | None) -> bytes | None:
    fig = rouge_bar_figure(scores, summary)
    return _png(fig) if fig is not None else None


def rouge_heatmap(
    generations: list[dict[str, Any]], scores: dict[str, Any], summary: TrainSummary | None
) -> bytes | None:
    """Per-question ROUGE-L (rows: questions, columns: models): where each model wins or fails."""
    models = model_order([str(g["model"]) for g in generations if g.get("model")])
    questions: dict[str, str] = {}
    values: dict[tuple[str, str], float] = {}
    for g in generations:
        qid = str(g.get("question_id", g.get("question", "")))
        questions.setdefault(qid, " ".join(str(g.get("question", qid)).split()))
        value = number((g.get("metrics") or {}).get("rougeL"))
        if value is not None and g.get("model"):
            values[(qid, str(g["model"]))] = value
    if not values:
        return None
    qids = list(questions)[:HEATMAP_MAX_ROWS]
    import numpy as np

    grid = np.array([[values.get((q, m), np.nan) for m in models] for q in qids])
    fig = _figure(min(16.0, 6.5 + 1.0 * len(models)), 1.6 + 0.24 * len(qids))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    short = [q if len(q) <= 60 else q[:57] + "..." for q in (questions[q] for q in qids)]
    ax.set_yticks(range(len(qids)), short, fontsize=7, parse_math=False)
    ax.set_xticks(
        range(len(models)),
        [model_label(m, kind_of(scores, m), summary) for m in models],
        rotation=30,
        ha="right",
        fontsize=8,
        parse_math=False,
    )
    if len(qids) > 20:  # long maps: model names on top as well
        ax.tick_params(axis="x", labeltop=True)
        for tick in ax.xaxis.get_major_ticks():
            tick.label2.set_rotation(30)
            tick.label2.set_horizontalalignment("left")
    if grid.size <= HEATMAP_MAX_LABELLED_CELLS:
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    more = f" (first {len(qids)} of {len(questions)})" if len(questions) > len(qids) else ""
    ax.set_title(f"ROUGE-L F1 per question{more}")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    return _png(fig)
