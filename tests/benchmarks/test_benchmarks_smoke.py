"""The benchmark scripts' code paths on the tiny model: every side of the CPU comparisons (seed, library,
qatune), their --tiny parent runs with the rows and ratios they report, and the GPU script's dry run, with small
sizes. Speed is not asserted here, only that each side measures what it claims to."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
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


def test_eval_library_side_decodes_what_qatune_decodes(lively_model_dir):
    """Plain HF generate on the same prompts, batch, stop ids and precision: the same greedy answers and the same
    new-token count (up to and including the stop token), on a model whose output depends on the prompt."""
    import cpu_eval

    questions = ["Who is the instructor?", "How is the grade computed?", "Where are the lectures?", "When is it?"]
    args = _args(
        model_path=str(lively_model_dir),
        adapter=None,
        precision="fp32",
        max_new_tokens=24,
        batch_size=2,
        without=None,
        draft_rows=None,
    )
    library = cpu_eval.side_library(args, questions)
    qatune = cpu_eval.side_qatune(args, questions)
    assert library["answers"] == qatune["answers"]
    assert library["new_tokens"] == qatune["new_tokens"] > 0
    assert library["stop_rate"] == qatune["stop_rate"]
    assert library["batch_size"] == qatune["batch_size"] == 2 and library["precision"] == "fp32"


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
        library_batch_size="auto",
        packing=False,
        precision="auto",
        threads=None,
    )
    seed = cpu_train.side_seed(args, pairs, tmp_path / "s")
    qatune = cpu_train.side_qatune(args, pairs, tmp_path / "q")
    library = cpu_train.side_library(args, pairs, tmp_path / "l")
    assert qatune["train_examples"] == len(pairs)
    assert seed["examples_per_s"] > 0 and qatune["examples_per_s"] > 0 and library["examples_per_s"] > 0
    assert math.isfinite(seed["final_loss"]) and math.isfinite(qatune["final_loss"])
    assert (tmp_path / "q" / "run" / "train" / "summary.json").exists()
    # the library Trainer trains on qatune's own tokens, batch, step count and precision
    for key in ("train_examples", "train_tokens", "answer_tokens", "batch_size", "steps", "precision"):
        assert library[key] == qatune[key], key
    assert library["final_loss"] == pytest.approx(qatune["final_loss"], rel=0.05)


def _best(rows: dict, prefix: str, key: str) -> dict:
    found = [r for label, r in rows.items() if label.startswith(prefix)]
    assert found, f"no {prefix!r} row"
    return max(found, key=lambda r: r[key])


def _tiny_here(monkeypatch, tmp_path, tiny_model_dir) -> None:
    """--tiny runs find the tiny model where they look for it (the temp dir), already built."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "qatune-bench-tiny")


def test_train_tiny_run_reports_three_sides_and_their_ratios(monkeypatch, tmp_path, tiny_model_dir):
    import cpu_train

    _tiny_here(monkeypatch, tmp_path, tiny_model_dir)
    out = cpu_train.main(["--tiny", "--repeats", "1", "--precision", "fp32"])
    assert out["sides"] == ["seed", "library", "qatune"] and len(out["rows"]) == 3
    seed, library, qatune = (_best(out["rows"], f"{s} run", "examples_per_s") for s in out["sides"])
    assert library["train_examples"] == qatune["train_examples"] == 8  # --tiny: 8 pairs x 1 epoch
    assert library["train_tokens"] == qatune["train_tokens"] > 0 and library["steps"] == qatune["steps"] > 0
    assert library["batch_size"] == qatune["batch_size"] and library["precision"] == "fp32"
    assert library["examples_per_s"] > 0 and library["useful_tokens_per_s"] > 0 and library["peak_rss_gib"] > 0
    assert math.isfinite(library["final_loss"])
    assert out["ratio"] == pytest.approx(qatune["examples_per_s"] / seed["examples_per_s"])
    assert out["ratio_library"] == pytest.approx(qatune["examples_per_s"] / library["examples_per_s"])


def test_train_sides_option_and_skip_seed():
    import cpu_train

    assert cpu_train.parse_sides(None) == ["seed", "library", "qatune"]
    assert cpu_train.parse_sides(None, skip_seed=True) == ["qatune"]  # as before: the lever runs
    assert cpu_train.parse_sides("qatune,library,seed", skip_seed=True) == ["library", "qatune"]
    with pytest.raises(SystemExit):
        cpu_train.parse_sides("trl")


def test_eval_tiny_run_reports_three_sides_and_their_ratios(monkeypatch, tmp_path, tiny_model_dir):
    import cpu_eval

    _tiny_here(monkeypatch, tmp_path, tiny_model_dir)
    out = cpu_eval.main(["--tiny", "--repeats", "1", "--precision", "fp32", "--seed-max-length", "96"])
    assert out["sides"] == ["seed", "library", "qatune"] and len(out["rows"]) == 3
    seed, library, qatune = (_best(out["rows"], f"{s} run", "questions_per_s") for s in out["sides"])
    assert len(library["answers"]) == len(qatune["answers"]) == 4  # --tiny: 4 questions
    assert library["new_tokens"] > 0 and library["questions_per_s"] > 0 and library["peak_rss_gib"] > 0
    assert library["batch_size"] == qatune["batch_size"] and library["precision"] == "fp32"
    # greedy decoding of the same prompts in fp32: the same answers and token counts
    assert library["answers_equal_to_qatune"] == 4 and library["new_tokens"] == qatune["new_tokens"]
    assert out["ratio"] == pytest.approx(qatune["questions_per_s"] / seed["questions_per_s"])
    assert out["ratio_library"] == pytest.approx(qatune["questions_per_s"] / library["questions_per_s"])


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


def test_attention_kernel_turns_train_the_same_steps_from_the_same_weights(tiny_model_dir, tmp_path):
    """benchmarks/attention_kernels.py: every kernel's turn starts from the initial adapters and trains the same
    optimizer steps, so in fp32 (where the kernels agree) the adapters end each turn alike; the gradient check
    reads the same loss either way."""
    import attention_kernels
    import torch

    from train_runs import write_config, write_data

    run = write_data(tmp_path / "run", n_train=8, n_val=2)
    write_config(run / "config.yaml", tiny_model_dir)
    s = attention_kernels._setup(run, "fp32")
    ends = {}
    for kernel in attention_kernels.KERNELS:
        seconds, tokens = attention_kernels._steps(s, kernel, 1, 2)
        assert seconds > 0 and tokens > 0
        ends[kernel] = {n: p.detach().clone() for n, p in s.params.items()}
    assert any(not torch.equal(ends["flash"][n], s.initial[n]) for n in s.initial)  # the steps trained
    for name, value in ends["math"].items():
        torch.testing.assert_close(value, ends["flash"][name], rtol=1e-4, atol=1e-6)
    flash, math_loss = attention_kernels._gradients(s, "flash"), attention_kernels._gradients(s, "math")
    assert flash[0] == pytest.approx(math_loss[0], rel=1e-5)
    torch.testing.assert_close(flash[1], math_loss[1], rtol=1e-4, atol=1e-6)


def test_retrieval_rankings_find_the_pair_a_question_shares_a_rare_word_with(tmp_path):
    """benchmarks/retrieval_rankings.py: with an embedder that cannot tell the pairs apart, MiniLM's place in the
    comparison ranks by row order (the first pair wins), while BM25 finds the one pair whose text holds the
    question's rare word; the score fusion follows it, and rank fusion (first place in one ranking against second in the
    other: a tie, won by the earlier pair) keeps it in the top 2."""
    import numpy as np
    import retrieval_rankings

    from qatune.rag.index import Index

    class Blind:
        def encode(self, texts, **_):
            return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    pairs = [
        {"id": "p1", "question": "When is the exam?", "answer": "On Friday."},
        {"id": "p2", "question": "Who teaches the lab?", "answer": "Marcus Lindqvist, the TA."},
        {"id": "p3", "question": "Where is the lab?", "answer": "Room B12."},
    ]
    vectors = Blind().encode([p["question"] for p in pairs])
    index = Index(pairs, vectors, pair_vectors=vectors)
    scores = retrieval_rankings.rankings(index, Blind(), ["Who is the TA?", "Which room holds the lab?"])
    gold = [1, 2]
    assert retrieval_rankings.hits_at(scores["MiniLM (qatune)"], gold, 1) == 0
    assert retrieval_rankings.hits_at(scores["MiniLM (qatune)"], gold, 3) == 2
    for name in ("BM25", "MiniLM + 0.1 x BM25/best"):
        assert retrieval_rankings.hits_at(scores[name], gold, 1) == 2, name
    assert retrieval_rankings.hits_at(scores["reciprocal rank fusion, c=10"], gold, 2) == 2
