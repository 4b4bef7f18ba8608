"""The charts: correctly averaged ROUGE bars, loss curves of resumed and swept runs, awkward question text."""

from __future__ import annotations

import json

import pytest
from report_fakes import make_run

from qatune.report import plots
from qatune.report.load import load_run
from qatune.storage import read_jsonl
from qatune.train.state import TrainSummary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, scored_run):
    return make_run(tmp_path_factory.mktemp("plots"), scored_run)


def test_grouped_bars_show_means_over_all_questions(run):
    data = load_run(run)
    ev = data.evals[0]
    fig = plots.rouge_bar_figure(ev.scores, data.summary)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["base", "retrieval (baseline)", "epoch-1", "epoch-2", "best (= epoch-2)"]
    gens = read_jsonl(run / "eval" / "test" / "generations.jsonl")
    models = [label.split(" ")[0] for label in labels]
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) == 3 * len(models)
    for j, metric in enumerate(("rouge1", "rouge2", "rougeL")):
        for i, model in enumerate(models):
            values = [g["metrics"][metric] for g in gens if g["model"] == model]
            height = bars[j * len(models) + i].get_height()
            assert height == pytest.approx(sum(values) / len(values))
            if len(set(values)) > 1:  # not one question's score, as the seed's chart took
                assert all(height != pytest.approx(v) for v in values[:3])
    assert [bars[len(models) * j + 1].get_hatch() for j in range(3)] == ["//"] * 3  # retrieval marked


def test_loss_curves_handle_resume_and_independent_sweep():
    resumed = [{"step": s, "epoch": s / 4, "loss": 2.0 / s} for s in range(1, 9)]
    resumed += [{"step": s, "epoch": s / 4, "loss": 2.0 / s} for s in range(5, 13)]  # re-logged after resume
    resumed += [{"step": 4, "epoch": 1.0, "eval_loss": 1.5}, {"step": 8, "epoch": 2.0, "eval_loss": 1.4}]
    series = plots._series(resumed, "loss")
    assert [p[0] for p in series[""]] == list(range(1, 13))
    assert plots.loss_curves(resumed, TrainSummary(epochs=[1, 2, 3])).startswith(PNG_MAGIC)
    swept = [
        {"step": s, "epoch": s / 2, "loss": 1 / s, "target_epochs": t} for t in (1, 2) for s in range(1, 2 * t + 1)
    ]
    assert set(plots._series(swept, "loss")) == {"1", "2"}
    assert plots.loss_curves(swept, None).startswith(PNG_MAGIC)
    unnamed = [{k: v for k, v in r.items() if k != "target_epochs"} for r in swept]
    runs = plots._series(unnamed, "loss")
    assert {k: [p[0] for p in v] for k, v in runs.items()} == {"run 1": [1, 2], "run 2": [1, 2, 3, 4]}
    assert plots.loss_curves([], None) is None


def test_moving_average_is_debiased_and_follows_the_loss():
    assert plots.smooth([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # no pull towards zero at the start
    steps = plots.smooth([1.0] * 10 + [0.0] * 10, 0.5)
    assert steps[9] == pytest.approx(1.0) and 0 < steps[10] < 1 and steps[-1] == pytest.approx(0, abs=1e-3)
    assert plots.smoothing_weight(10) == 0 and 0 < plots.smoothing_weight(50) < plots.smoothing_weight(500) <= 0.98


def test_loss_plot_draws_the_smoothed_line_over_the_raw_one():
    records = [{"step": s, "epoch": s / 25, "loss": 2.0 / s + (0.3 if s % 2 else 0)} for s in range(1, 101)]
    ax = plots.loss_figure(records, None).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    raw, ema = lines["train loss per step"], lines["train loss, EMA"]
    assert list(raw.get_xdata()) == list(ema.get_xdata()) == list(range(1, 101))
    assert raw.get_alpha() < 1 and ema.get_linewidth() > raw.get_linewidth()
    jumps = [abs(a - b) for a, b in zip(ema.get_ydata()[50:], ema.get_ydata()[51:], strict=False)]
    assert max(jumps) < 0.3 / 2  # the alternating 0.3 wiggle is smoothed out
    short = plots.loss_figure(records[:8], None).axes[0]
    assert [line.get_label() for line in short.get_lines()][0] == "train loss"  # too few steps to smooth


def test_heatmap_accepts_markup_math_and_many_questions():
    gens = [
        {
            "model": m,
            "question_id": f"q{i}",
            "question": f"Is $x^2$ {{and}} \\frac <b>{i}</b>\nok?",
            "metrics": {"rougeL": (i % 10) / 10},
        }
        for m in ("base", "epoch-1")
        for i in range(200)
    ]
    png = plots.rouge_heatmap(gens, {"models": {}}, None)
    assert png.startswith(PNG_MAGIC)
    assert plots.rouge_heatmap([], {}, None) is None


def test_metrics_vs_epoch_needs_epoch_models(run):
    scores = json.loads((run / "eval" / "test" / "scores.json").read_text())
    assert plots.metrics_vs_epoch(scores, None).startswith(PNG_MAGIC)
    only_base = {"models": {"base": scores["models"]["base"]}, "metrics": scores["metrics"]}
    assert plots.metrics_vs_epoch(only_base, None) is None
