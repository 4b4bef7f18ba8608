"""The benchmark scripts' code paths on the tiny model: both sides of the CPU comparisons and the GPU script's
dry run, with small sizes. Speed is not asserted here, only that each side measures what it claims to."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_eval_sides_answer_every_question(tiny_model_dir):
    import cpu_eval

    questions = ["Who is the instructor?", "How is the grade computed?"]
    args = _args(
        model_path=str(tiny_model_dir),
        adapter=None,
        precision="fp32",
        seed_max_length=48,
        max_new_tokens=6,
        batch_size=2,
        without=None,
        draft_rows=None,
    )
    seed = cpu_eval.side_seed(args, questions)
    qatune = cpu_eval.side_qatune(args, questions)
    assert len(seed["answers"]) == len(qatune["answers"]) == 2
    # the seed decodes the whole sequence: its scored "answer" still holds the [INST] prompt
    assert all("[INST]" in a for a in seed["answers"])
    assert not any("[INST]" in a for a in qatune["answers"])
    assert 0 < qatune["new_tokens"] <= 2 * 6
    assert seed["new_tokens"] > 0 and seed["questions_per_s"] > 0 and 0.0 <= qatune["stop_rate"] <= 1.0


def test_train_sides_report_the_training_loop(tiny_model_dir, tmp_path):
    import cpu_train

    pairs = [
        ("What is the title of this course?", "Deep Learning."),
        ("Who teaches it?", "Ada Lovelace."),
        ("Where are lectures?", "Room 101."),
        ("How is it graded?", "Homework 40%, final 60%."),
    ]
    args = _args(
        model_path=str(tiny_model_dir),
        epochs=1,
        val=1,
        batch_size="auto",
        packing=False,
        precision="auto",
        threads=None,
    )
    seed = cpu_train.side_seed(args, pairs, tmp_path / "s")
    qatune = cpu_train.side_qatune(args, pairs, tmp_path / "q")
    assert qatune["train_examples"] == len(pairs)
    assert seed["examples_per_s"] > 0 and qatune["examples_per_s"] > 0
    assert math.isfinite(seed["final_loss"]) and math.isfinite(qatune["final_loss"])
    assert (tmp_path / "q" / "run" / "train" / "summary.json").exists()


def test_gpu_script_dry_run_covers_every_side(tmp_path):
    import gpu_bench

    results = gpu_bench.main(
        ["--tiny", "--only", "seed,lora", "--out", str(tmp_path), "--model-dir", str(tmp_path / "model")]
    )
    names = {r["variant"] for r in results}
    assert {"seed_qlora_pad256_bs2x2_fp16_gc", "seed_gen_beam5_bs1_maxlen200"} <= names
    assert any(n.startswith("lora_packed") for n in names) and any(n.startswith("lora_dynpad") for n in names)
    assert any(n.startswith("qatune_gen_greedy") for n in names)
    assert all(math.isfinite(r["loss"]) and r["useful_tok_per_s"] > 0 for r in results if "loss" in r)
    saved = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert saved["env"]["device"] == "cpu" and len(saved["results"]) == len(results)
    sys.modules.pop("gpu_bench", None)
