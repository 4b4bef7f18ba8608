"""The time-to-quality and scaling benchmarks: the reading of a run (when a model reaches the target, what its
eval share is), the synthetic data, the growth fit, and each script's --tiny dry run end to end."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.fixture
def tiny_runs(monkeypatch, tmp_path, tiny_model_dir):
    """--tiny runs use the session's tiny model and write under tmp_path."""
    import record

    monkeypatch.setattr(record, "tiny_model", lambda folder: tiny_model_dir)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _write(path: Path, data: object, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _rouge(mean: float) -> dict:
    return {"rougeL": {"mean": mean, "ci95": [mean - 0.05, mean + 0.05]}}


def _fake_run(root: Path, start: float, means: dict[int, float]) -> Path:
    """A finished default run: prepare ends at start+5, epoch N's checkpoint at start+5+60N, training ends at
    start+200, eval at start+250 (50 s for base, one model per epoch, base+rag, best+rag), report at start+252."""
    epochs = sorted(means)
    best = max(epochs, key=lambda e: means[e])
    import yaml

    from qatune.config import Config

    config = Config().model_dump()  # the defaults: recipe "default"
    _write(root / "config.yaml", yaml.safe_dump(config), start + 5)
    for e in epochs:
        _write(root / "models" / f"epoch-{e}" / "adapter_model.safetensors", "x", start + 5 + 60 * e)
    summary = {"epochs": epochs, "best_epoch": best, "precision": "fp32", "train_seconds": 180.0, "eval_seconds": 9.0}
    _write(root / "train" / "summary.json", summary, start + 200)
    models = {"base": _rouge(0.1), "retrieval": _rouge(0.7), "base+rag": _rouge(0.5), "best+rag": _rouge(0.8)}
    models.update({f"epoch-{e}": _rouge(m) for e, m in means.items()}, best=_rouge(means[best]))
    _write(root / "eval" / "test" / "scores.json", {"n": 37, "models": models}, start + 250)
    prints = {"base": "b", "retrieval": "r", **{f"epoch-{e}": f"e{e}" for e in epochs}, "best": f"e{best}"}
    prints.update({"base+rag": "br", "best+rag": "er"})
    _write(root / "eval" / "test" / "inputs.json", {"models": prints})
    _write(root / "report" / "report.html", "<html></html>", start + 252)
    return root


def test_first_epoch_at_the_target_is_reached_when_saved_and_measured(tmp_path):
    import time_to_quality as ttq

    start = 1_700_000_000.0
    run = _fake_run(tmp_path / "run", start, {1: 0.30, 2: 0.46, 3: 0.55})
    r = ttq.analyse(run, start, {"prepare": 5.0, "train": 195.0, "eval:test": 50.0, "report": 2.0})
    # eval generated base, epoch-1..3, base+rag, best+rag (not retrieval, not best = a copy of epoch-3): 50 s / 6
    assert r["eval_generating_models"] == ["base", "epoch-1", "epoch-2", "epoch-3", "base+rag", "best+rag"]
    assert r["eval_share_s"] == pytest.approx(50 / 6, abs=0.05)
    assert [m["saved_at_s"] for m in r["models"]] == [65.0, 125.0, 185.0]
    assert r["reached"] and r["first_model"] == "epoch-2" and r["checkpoint_at_s"] == 125.0
    assert r["time_to_target_s"] == pytest.approx(125.0 + 50 / 6, abs=0.1)
    assert r["top_closed_book"]["model"] == "epoch-3" and r["best"]["epoch"] == 3 and r["recipe"] == "default"

    missed = ttq.analyse(run, start, {"eval:test": 50.0}, target=0.6)
    assert not missed["reached"] and missed["time_to_target_s"] is None and missed["first_model"] is None


def test_a_finished_run_is_read_back_with_or_without_its_log(tmp_path, capsys):
    import time_to_quality as ttq

    start = 1_700_000_000.0
    run = _fake_run(tmp_path / "run", start, {2: 0.41, 3: 0.44})
    log = tmp_path / "run.log"
    log.write_text("...\nstages: prepare 5s, train 195s, eval:test 50s, report 2s (total 252s)\n")
    [with_log, without] = ttq.main(["--from-run", str(run), "--log", str(log), "--from-run", str(run)])
    assert with_log["wall_s"] == 252.0 and with_log["models"][0]["saved_at_s"] == 125.0
    assert with_log["stages_s"] == {"prepare": 5.0, "train": 195.0, "eval:test": 50.0, "report": 2.0}
    # without the log: stages from file times, times counted from the end of prepare
    assert without["stages_s"] == {"train": 195.0, "eval:test": 50.0, "report": 2.0}
    assert without["models"][0]["saved_at_s"] == 120.0 and without["wall_s"] == 247.0
    assert not with_log["reached"] and with_log["top_closed_book"]["rougeL"] == 0.44
    assert "not reached (best closed-book: epoch-3 0.44" in capsys.readouterr().out


def test_stage_seconds_from_either_output_form():
    import timed_run

    assert timed_run.stage_seconds("prepare: done in 0.3s\n  train: done in 71.0s\neval:test: done in 6.5s\n") == {
        "prepare": 0.3,
        "train": 71.0,
        "eval:test": 6.5,
    }
    quiet = "| best | 0.5 |\nstages: prepare 4s, train 267s, eval:test 107s, report 2s (total 380s)\n"
    assert timed_run.stage_seconds(quiet) == {"prepare": 4.0, "train": 267.0, "eval:test": 107.0, "report": 2.0}
    assert timed_run.stage_seconds("no stages here") == {}


def test_synthetic_data_has_distinct_facts_and_nested_sizes(tmp_path):
    import synthetic_qa

    from qatune.data.clean import question_key
    from qatune.data.read import read_table

    short, long = synthetic_qa.pairs(300, "short"), synthetic_qa.pairs(300, "long")
    assert short == synthetic_qa.pairs(300, "short") and short[:100] == synthetic_qa.pairs(100, "short")
    for rows, (lo, hi) in ((short, (10, 20)), (long, (60, 100))):
        assert len({r["answer"] for r in rows}) == len({question_key(r["question"]) for r in rows}) == 300
        assert all(lo <= len(r["answer"].split()) <= hi for r in rows)
    assert [r["question"] for r in short] == [r["question"] for r in long]
    assert all(lr["answer"].startswith(sr["answer"]) for sr, lr in zip(short, long, strict=True))
    assert synthetic_qa.pairs(300, "short", seed=1) != short

    data, test = synthetic_qa.write(tmp_path, 300, "short", 20, test_from=100)
    table = read_table(data)
    assert (table.question_col, table.answer_col) == ("question", "answer") and len(table.rows) == 300
    _, test_small = synthetic_qa.write(tmp_path / "small", 100, "short", 20, test_from=100)
    assert test.read_text() == test_small.read_text()  # the same test file for every size
    tests = read_table(test).rows
    answers = {r["answer"]: r["question"] for r in short[:100]}
    asked = {question_key(r["question"]) for r in short}
    assert len(tests) == 20 and all(r.answer in answers for r in tests)
    assert not any(question_key(r.question) in asked for r in tests)  # reworded: none is trained as it stands


def test_growth_reads_the_slope_per_stage():
    import scaling

    def row(n: int, answers: str = "short") -> dict:
        stages = {s: 1.0 for s in scaling.STAGES}
        stages.update(train_loop=0.5 * n, prepare=2.0 + 0.01 * n, eval=40.0)
        return {
            "pairs": n,
            "answers": answers,
            "stages_s": stages,
            "wall_s": sum(stages.values()),
            "tokens_per_pair": 200.0,
            "tokens_per_epoch": 200 * n,
            "examples_per_epoch": 4 * n,
            "eval_questions": 20,
            "eval_generating_models": ["base", "epoch-1", "base+rag", "best+rag"],
        }

    g = scaling.growth([row(100), row(300), row(50, "long")])
    short = g["short"]
    assert short["fitted"] and not g["long"]["fitted"]
    assert short["s_per_100_pairs"]["train_loop"] == pytest.approx(50.0)
    assert short["s_per_100_pairs"]["prepare"] == pytest.approx(1.0) and short["intercept_s"]["prepare"] == 2.0
    assert short["loop_s_per_ktoken"] == pytest.approx(2.5) and short["examples_per_pair"] == 4.0
    assert short["eval_s_per_question_model"] == 0.5
    est = scaling.extrapolate(short, 1000, epochs_run=1)
    assert est["train_loop"] == round(0.5 * 900 * 3) and est["eval"] == round(0.5 * (50 + 100) * 5)


def test_time_to_quality_dry_run(tiny_runs, capsys):
    import time_to_quality as ttq

    results = ttq.main(["--tiny"])
    assert [r["recipe"] for r in results] == ["default", "seed"]
    for r in results:
        assert not r["reached"] and r["time_to_target_s"] is None and r["test_questions"] == 37
        assert [m["model"] for m in r["models"]] == ["epoch-1"]
        assert 0 < r["models"][0]["saved_at_s"] < r["models"][0]["measured_at_s"] < r["wall_s"]
        assert {"prepare", "train", "eval:test", "report"} <= set(r["stages_s"])
    assert "+rag" in "".join(results[0]["eval_generating_models"])
    assert not any("+rag" in m for m in results[1]["eval_generating_models"])  # --no-grounded
    assert "--lora-r 8" in results[1]["command"] and "--precision fp32" in results[1]["command"]
    assert capsys.readouterr().out.count("not reached") >= 4


def test_scaling_dry_run(tiny_runs, capsys):
    import scaling

    result = scaling.main(["--tiny", "--points", "12:short,24:short"])
    rows = result["rows"]
    assert [(r["pairs"], r["answers"]) for r in rows] == [(12, "short"), (24, "short")]
    for r in rows:
        assert r["eval_questions"] == 4 and r["epochs"] == 1 and r["train_pairs"] == r["pairs"]
        # itself, 2 rewordings, 1 grounded example; and the unanswerable questions trained with the refusal
        assert r["refusal_questions"] > 0 and r["examples_per_epoch"] == 4 * r["pairs"] + r["refusal_questions"]
        assert set(r["stages_s"]) == set(scaling.STAGES) and r["stages_s"]["train_loop"] > 0
    assert rows[1]["tokens_per_epoch"] > rows[0]["tokens_per_epoch"]
    assert result["growth"]["short"]["fitted"]
    assert "training tokens" in capsys.readouterr().out
