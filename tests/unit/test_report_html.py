"""report.html from fake run directories: self-contained, escaped, complete, and robust to partial runs."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import lxml.html
import pytest
from report_fakes import MODELS, XSS, make_run

from qatune.console import QatuneError
from qatune.report.html import build
from qatune.storage import read_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, scored_run) -> tuple[Path, str]:
    run = make_run(tmp_path_factory.mktemp("full"), scored_run, evals=("test", "paraphrased"))
    path = build(run)
    return run, path.read_text(encoding="utf-8")


def _doc(page: str):
    return lxml.html.document_fromstring(page)


def test_build_writes_every_output_file(full_report):
    run, _ = full_report
    names = {p.name for p in (run / "report").iterdir()}
    assert {"report.html", "results.csv", "results.md", "recommendation.json", "loss_curves.png"} <= names
    for ev in ("test", "paraphrased"):
        assert {f"{ev}_rouge_bars.png", f"{ev}_metrics_vs_epoch.png", f"{ev}_rougeL_heatmap.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for png in (run / "report").glob("*.png"):
        assert png.read_bytes().startswith(PNG_MAGIC)


def test_images_are_embedded_pngs_and_nothing_is_fetched(full_report):
    run, page = full_report
    doc = _doc(page)
    images = doc.xpath("//img")
    assert len(images) == 1 + 2 * 3  # loss curves + three charts per eval set
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for attr in ("src", "href", "action", "data", "poster"):
        for value in doc.xpath(f"//@{attr}"):
            assert not re.match(r"\s*(https?:)?//", value), value
            assert value.startswith(("data:image/png;base64,", "#")), value
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", page, re.I)
    assert not doc.xpath("//script | //link | //iframe | //object | //embed")
    assert "<style>" in page  # CSS inline


def test_every_model_answer_and_reference_is_shown(full_report):
    run, page = full_report
    text = _doc(page).text_content()
    for ev in ("test", "paraphrased"):
        gens = read_jsonl(run / "eval" / ev / "generations.jsonl")
        assert {g["model"] for g in gens} == set(MODELS)
        for g in gens:
            assert g["answer"] in text
            assert g["reference"] in text
            assert g["question"] in text


def test_planted_markup_renders_as_text(full_report):
    run, page = full_report
    doc = _doc(page)
    assert not doc.xpath("//script"), "a <script> element was created from data"
    assert not doc.xpath("//@onerror"), "an onerror attribute was created from data"
    assert all(img.get("src").startswith("data:image/png;base64,") for img in doc.xpath("//img"))
    text = doc.text_content()
    for payload in XSS:
        assert payload in text
        assert f"cell looks like markup: {payload}" in text  # the data report's warnings
    assert f"empty answer {XSS[0]}" in text  # dropped-row reason
    assert f"/data/QA {XSS[1]}.xlsx" in text and f"Sheet{XSS[2]}" in text  # source file and sheet
    # '</td></tr></table>' in answers must not close the answer tables: each keeps its header, the
    # reference row and one row per model
    n_questions = len({g["question_id"] for g in read_jsonl(run / "eval" / "test" / "generations.jsonl")})
    tables = doc.xpath("//details[@class='q']/table")
    assert len(tables) == 2 * n_questions
    for table in tables:
        assert len(table.xpath(".//tr")) == 2 + len(MODELS)


def test_report_shows_data_training_comparisons_and_warning(full_report):
    run, page = full_report
    text = " ".join(_doc(page).text_content().split())
    for needle in (
        "valid question/answer pairs",
        "Dropped rows (2)",
        "Peak memory",
        "1.40 GiB",
        "2 min 5 s",
        "Validation loss by epoch",
        "Change vs base",
        "Answers side by side",
        "with n < 30 the 95% confidence intervals are wide",
        "BERTScore not computed",
    ):
        assert needle in text, needle
    rec = json.loads((run / "report" / "recommendation.json").read_text())
    assert rec["model"] == "epoch-2" and rec["reason"] in text


def _training_table(page: str) -> dict[str, str]:
    rows = _doc(page).xpath("//table[contains(@class, 'training')]//tr")
    return {r.xpath("string(th)").strip(): " ".join(r.xpath("string(td)").split()) for r in rows}


def test_training_summary_is_labelled_with_units(full_report):
    _, page = full_report
    rows = _training_table(page)
    assert rows["Device"] == "cpu" and rows["Precision"] == "fp32"
    assert rows["Training time"] == "2 min 5 s (of which 8.0 s validating)"
    assert rows["Examples per second"] == "0.64 examples/s"
    assert rows["Tokens per second"] == "910 tokens/s"
    assert rows["Peak memory"] == "1.40 GiB (process resident memory)"
    assert rows["Epochs run / requested"] == "2 of 2; sweep one-pass"
    assert rows["Best epoch"] == "epoch 2, chosen by lowest validation loss (1.4000)"
    assert rows["Saved models"] == "epoch-1, epoch-2"
    assert rows["LoRA"] == "rank 8, alpha 16, dropout 0.1, on q_proj, v_proj"
    assert rows["Training data"].startswith("40 training pairs, 5 validation; 80 examples seen; 5,120 tokens")


def test_training_on_answer_leads_is_said_in_the_training_data_row():
    from qatune.report.training import summary_rows
    from qatune.train.state import TrainSummary

    led = dict(summary_rows(TrainSummary(train_pairs=147, train_tokens=1000, answer_leads=48)))
    whole = dict(summary_rows(TrainSummary(train_pairs=147, train_tokens=1000)))
    assert "each answer's lead (to a sentence end within 48 tokens)" in led["Training data"]
    assert "lead" not in whole["Training data"]


def test_raw_summary_keys_appear_only_in_the_collapsed_json(full_report):
    run, page = full_report
    doc = _doc(page)
    (raw,) = doc.xpath("//details[contains(@class, 'raw')]")
    assert raw.get("open") is None
    assert json.loads(raw.xpath("string(pre)")) == json.loads((run / "train" / "summary.json").read_text())
    raw.drop_tree()
    rest = doc.text_content()
    for key in ("input_hash", "finished_at", "eval_seconds", "peak_memory_bytes", "model_path"):
        assert key not in rest, key


def test_best_epoch_shows_why_it_was_chosen(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run, evals=())
    path = run / "train" / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(selected_by=f"highest recall ROUGE-L {XSS[1]}", device="cuda:0 (H200)", peak_memory_bytes=3 << 20)
    summary.update(quantization="4bit", precision="bf16", tokens_per_second="fast", epochs="broken")
    path.write_text(json.dumps(summary), encoding="utf-8")
    page = build(run).read_text(encoding="utf-8")
    rows = _training_table(page)
    assert rows["Best epoch"] == f"epoch 2, chosen by highest recall ROUGE-L {XSS[1]}"
    assert not _doc(page).xpath("//img[@onerror]")
    assert rows["Peak memory"] == "3.00 MiB (GPU memory allocated)"
    assert rows["Precision"] == "bf16, base weights 4bit"
    assert "Tokens per second" not in rows and "Saved models" not in rows  # unreadable values are left out
    summary["best_reason"] = "lowest loss on unseen facts"
    path.write_text(json.dumps(summary), encoding="utf-8")
    assert _training_table(build(run).read_text(encoding="utf-8"))["Best epoch"].endswith("lowest loss on unseen facts")


def test_partial_run_without_eval_still_builds(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run, evals=())
    page = build(run).read_text(encoding="utf-8")
    text = " ".join(_doc(page).text_content().split())
    assert "no evaluation yet" in text
    assert "No recommendation yet" in text
    assert len(_doc(page).xpath("//img")) == 1  # only the loss curves
    rec = json.loads((run / "report" / "recommendation.json").read_text())
    assert rec["model"] is None and rec["verdict"] == "no-evaluation"
    assert "No evaluation results yet" in (run / "report" / "results.md").read_text()


def test_run_with_only_prepared_data_builds(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run, train=False, evals=())
    page = build(run).read_text(encoding="utf-8")
    text = " ".join(_doc(page).text_content().split())
    assert "training has not finished" in text and "No training summary" in text
    assert not _doc(page).xpath("//img")


def test_damaged_files_are_reported_not_fatal(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run)
    (run / "train" / "summary.json").write_text("{not json", encoding="utf-8")
    (run / "eval" / "test" / "combined_responses.json").write_text("[", encoding="utf-8")
    with open(run / "train" / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 99, "lo')  # a crash mid-line
    (run / "eval" / "half").mkdir()
    (run / "eval" / "half" / "generations.jsonl").write_text("", encoding="utf-8")
    page = build(run).read_text(encoding="utf-8")
    text = " ".join(_doc(page).text_content().split())
    assert "summary.json could not be read" in text
    assert "eval set 'half' is incomplete" in text
    assert re.search(r"Recommended model: (epoch-2|best)", text)  # best = epoch-2 is unknown here


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(QatuneError, match="not found"):
        build(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QatuneError, match="not a qatune run directory"):
        build(tmp_path / "empty")


def test_rebuild_replaces_stale_report_files(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run, evals=("test", "old"))
    build(run)
    assert (run / "report" / "old_rouge_bars.png").exists()
    import shutil

    shutil.rmtree(run / "eval" / "old")
    build(run)
    assert not (run / "report" / "old_rouge_bars.png").exists()


def test_report_never_imports_torch(tmp_path, scored_run):
    import subprocess
    import sys

    run = make_run(tmp_path, scored_run, evals=())
    code = (
        "import sys; import qatune.report.tables, qatune.report.html as h; "
        "assert 'matplotlib' not in sys.modules; h.build(sys.argv[1]); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(run)], check=True, capture_output=True)


def _cells(doc, heading: str, index: int) -> dict[str, list[str]]:
    """The `index`-th table under an h3 starting with `heading`: model -> cell texts without whitespace."""
    table = doc.xpath(f"//h3[starts-with(normalize-space(.), '{heading}')]")[index].getnext().xpath(".//table")[0]
    rows = {}
    for tr in table.xpath(".//tr[td]"):
        first, *cells = tr.xpath("./td")
        rows[first.text.strip().split(" ")[0]] = ["".join(c.text_content().split()) for c in cells]
    return rows


def test_end_to_end_report_states_the_decision_the_scores_and_every_chart(full_report):
    """On eval sets written by the real eval stage: the recommendation follows from scores.json, every number
    in the score and comparison tables (HTML and CSV) is the one scores.json holds, and every chart file is
    the image embedded in the page."""
    from qatune.report.tables import fmt_p, fmt_stat, metric_columns, stat_parts

    run, page = full_report
    doc = _doc(page)
    text = " ".join(doc.text_content().split())
    scores = {ev: json.loads((run / "eval" / ev / "scores.json").read_text()) for ev in ("test", "paraphrased")}

    rec = json.loads((run / "report" / "recommendation.json").read_text())
    assert (rec["verdict"], rec["model"]) == ("ship", "epoch-2")
    gain = scores["test"]["comparisons"]["epoch-2"]["rougeL"]
    assert rec["reason"].startswith("Ship epoch-2: it beats base on 12 held-out questions (test) with ROUGE-L ")
    assert f"+{fmt_stat((gain['diff'], *gain['ci95']))} (p {fmt_p(gain['p'])})" in rec["reason"]
    assert " ".join(rec["reason"].split()) in text
    elsewhere = [n for n in rec["evidence"]["notes"] if n.startswith("on 'paraphrased' (12 questions) epoch-2")]
    assert len(elsewhere) == 1 and elsewhere[0].endswith("vs base (not significant)")

    for index, (name, sc) in enumerate(scores.items()):
        metrics = metric_columns(sc)
        shown = _cells(doc, "Scores", index)
        assert set(shown) == set(sc["models"])
        for model, per in sc["models"].items():
            expected = [
                "".join(fmt_stat((per[m]["mean"], *per[m]["ci95"])).split()) if m in per else "–" for m in metrics
            ]
            assert shown[model][: len(metrics)] == expected, (name, model)
        changes = _cells(doc, "Change vs base", index)
        assert set(changes) == set(sc["comparisons"])
        for model, per in sc["comparisons"].items():
            for m, cell in zip(metrics, changes[model], strict=True):
                c = per.get(m)
                head, ci = stat_parts((c["diff"], *c["ci95"]), signed=True) if c else ("–", "")
                assert cell == "".join(f"{head}{ci}{'p' + fmt_p(c['p']) if c else ''}".split()), (name, model, m)

    rows = list(csv.DictReader(io.StringIO((run / "report" / "results.csv").read_text())))
    assert len(rows) == sum(len(sc["models"]) for sc in scores.values())
    for row in rows:
        per = scores[row["eval_set"]]["models"][row["model"].split(" ")[0]]
        for metric, col in (("rouge1", "ROUGE-1"), ("rougeL", "ROUGE-L"), ("semantic", "semantic sim.")):
            mean, (lo, hi) = per[metric]["mean"], per[metric]["ci95"]
            got = [float(row[col]), float(row[f"{col} CI low"]), float(row[f"{col} CI high"])]
            assert got == pytest.approx([mean, lo, hi], abs=6e-5)

    charts = {p.name: p.read_bytes() for p in (run / "report").glob("*.png")}
    kinds = ("rouge_bars", "metrics_vs_epoch", "rougeL_heatmap")
    assert set(charts) == {"loss_curves.png"} | {f"{ev}_{kind}.png" for ev in scores for kind in kinds}
    embedded = {img.get("src").split(",", 1)[1] for img in doc.xpath("//img")}
    assert embedded == {base64.b64encode(png).decode("ascii") for png in charts.values()}


def test_the_retrieval_ceiling_is_stated_under_the_retrieval_comparison(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run)
    scores_path = run / "eval" / "test" / "scores.json"
    scores = json.loads(scores_path.read_text())
    assert scores["vs_retrieval"]
    page = " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    assert "Retrieval ceiling" not in page  # the scored run recorded no runners-up
    ceiling = {"k": 2, "rougeL": {"mean": 0.9, "ci95": [0.8, 0.97]}, "first_is_best": 9}
    scores_path.write_text(json.dumps({**scores, "retrieval_ceiling": ceiling}), encoding="utf-8")
    page = " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    sentence = "copying the best of the 2 retrieved training answers of each question (picked with the reference)"
    assert sentence in page and "ROUGE-L 0.90 [0.80, 0.97]" in page
    assert f"on 9 of {scores['n']} questions" in page and f"only on the other {scores['n'] - 9}" in page
    assert page.index("vs retrieval (paired difference") < page.index("Retrieval ceiling")
    assert sentence in (run / "report" / "results.md").read_text(encoding="utf-8")


def test_quoted_answers_are_counted_under_the_scores(tmp_path, scored_run):
    """How many answers a model showed as a retrieved answer (copying or quoting) is visible in the report."""
    run = make_run(tmp_path, scored_run)
    scores_path = run / "eval" / "test" / "scores.json"
    scores = json.loads(scores_path.read_text())
    assert "quoted" in scores and scores["quoted"] == {}  # the scored run quoted nothing
    page = " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    assert "Quoted:" not in page
    scores_path.write_text(json.dumps({**scores, "quoted": {"epoch-2": 3}}), encoding="utf-8")
    page = " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    assert f"Quoted: epoch-2 3 of {scores['n']} answers were shown as the retrieved answer they copy" in page


def test_chosen_answers_are_counted_and_explained_under_the_scores(tmp_path, scored_run):
    """On long answers a grounded model's answers are chosen among the retrieved ones: the report says how many."""
    run = make_run(tmp_path, scored_run)
    scores_path = run / "eval" / "test" / "scores.json"
    scores = json.loads(scores_path.read_text())
    assert scores["chosen"] == {}  # the scored run wrote its answers
    assert "Chosen:" not in " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    scores_path.write_text(json.dumps({**scores, "chosen": {"epoch-2": 2}}), encoding="utf-8")
    page = " ".join(_doc(build(run).read_text(encoding="utf-8")).text_content().split())
    assert f"Chosen: epoch-2 2 of {scores['n']} answers were chosen, not written" in page
