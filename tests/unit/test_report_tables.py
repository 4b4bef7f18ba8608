"""results.md / results.csv: the seed's Table 2 layout plus CIs, one block per eval set, averaged correctly."""

from __future__ import annotations

import csv
import io
import re

import pytest
from report_fakes import make_run

from qatune.report.html import build
from qatune.report.tables import fmt_stat, results_markdown
from qatune.storage import read_jsonl

CELL = re.compile(r"^-?\d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]$")
ROW_LABELS = ["base", "retrieval (baseline)", "epoch-1", "epoch-2", "best (= epoch-2)"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, scored_run):
    run = make_run(tmp_path_factory.mktemp("tables"), scored_run, evals=("test", "paraphrased"))
    build(run)
    return run


def _question_means(run, name: str) -> dict[str, dict[str, float]]:
    """Per model, each metric averaged over all questions, straight from generations.jsonl."""
    sums: dict[str, dict[str, list[float]]] = {}
    for g in read_jsonl(run / "eval" / name / "generations.jsonl"):
        for metric, value in g["metrics"].items():
            if value is not None:
                sums.setdefault(g["model"], {}).setdefault(metric, []).append(value)
    return {m: {k: sum(v) / len(v) for k, v in per.items()} for m, per in sums.items()}


def test_markdown_has_seed_layout_with_cis_per_eval_set(built):
    md = (built / "report" / "results.md").read_text()
    assert md == results_markdown(built)
    for name in ("test", "paraphrased"):
        assert f"### {name} (n = 12, mean [95% CI])" in md
    header = [h.strip() for h in md.splitlines()[2].strip("|").split("|")]
    assert header[:5] == ["model", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"]
    assert {"semantic sim.", "token F1", "exact match", "answer NLL", "stop rate"} <= set(header)
    block = md.split("### paraphrased")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[4:9]]
    assert [r[0] for r in rows] == ROW_LABELS
    for row in rows:
        assert all(CELL.match(c) for c in row[1:5]), row
    assert "Change vs base on test" in md


def test_csv_rows_and_values_are_question_averages(built):
    rows = list(csv.DictReader(io.StringIO((built / "report" / "results.csv").read_text())))
    assert [r["model"] for r in rows] == ROW_LABELS * 2
    assert [r["eval_set"] for r in rows] == ["test"] * 5 + ["paraphrased"] * 5
    assert {"ROUGE-1", "ROUGE-1 CI low", "ROUGE-1 CI high", "BLEU", "answer NLL", "stop rate"} <= set(rows[0])
    for name in ("test", "paraphrased"):
        means = _question_means(built, name)
        for r in (r for r in rows if r["eval_set"] == name):
            model = r["model"].split(" ")[0]
            for metric, col in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
                assert float(r[col]) == pytest.approx(means[model][metric], abs=1e-4)
                assert float(r[f"{col} CI low"]) <= float(r[col]) <= float(r[f"{col} CI high"])
    retrieval = next(r for r in rows if r["model"].startswith("retrieval"))
    assert retrieval["kind"] == "baseline" and retrieval["answer NLL"] == ""


def test_format_of_a_cell():
    assert fmt_stat((0.4512, 0.38, 0.521)) == "0.45 [0.38, 0.52]"
    assert fmt_stat((0.45, None, None)) == "0.45"
    assert fmt_stat(None) == "–"
    assert fmt_stat((12.34, 10.0, 14.5)) == "12.3 [10.0, 14.5]"


def test_markdown_without_evaluation(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run, evals=())
    assert "No evaluation results yet" in results_markdown(run)


def test_hostile_model_name_is_escaped_in_markdown_and_html(tmp_path, scored_run):
    import json

    import lxml.html

    run = make_run(tmp_path, scored_run)
    bad = "ep<script>alert(1)</script>$x^2$|1"
    folder = run / "eval" / "test"
    scores = json.loads((folder / "scores.json").read_text())
    for per_model in scores.values():  # models, kinds, comparisons, vs_retrieval, stop_rate, ...
        if isinstance(per_model, dict) and "epoch-1" in per_model:
            per_model[bad] = per_model.pop("epoch-1")
    (folder / "scores.json").write_text(json.dumps(scores))
    gens = read_jsonl(folder / "generations.jsonl")
    lines = [json.dumps({**g, "model": bad if g["model"] == "epoch-1" else g["model"]}) for g in gens]
    (folder / "generations.jsonl").write_text("\n".join(lines) + "\n")
    page = build(run).read_text()
    md = results_markdown(run)
    assert "<script>" not in md and "ep&lt;script&gt;alert(1)&lt;/script&gt;$x^2$\\|1" in md
    row = next(line for line in md.splitlines() if "&lt;script" in line)
    assert len(row.replace("\\|", "").strip("|").split("|")) == 12  # model + 10 metrics + stop rate
    doc = lxml.html.document_fromstring(page)
    assert not doc.xpath("//script") and bad in doc.text_content()
