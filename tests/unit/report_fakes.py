"""Fake but schema-correct run directories for the report tests: data report, config, training metrics
and summary, and eval sets whose scores.json is computed from their generations.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</td></tr></table>"]
MODELS = ["base", "retrieval", "epoch-1", "epoch-2", "best"]
METRICS = ["rouge1", "rouge2", "rougeL", "bleu", "semantic", "token_f1", "exact_match", "answer_nll"]
DEFAULT_EFFECTS = {"base": 0.0, "retrieval": 0.08, "epoch-1": 0.02, "epoch-2": 0.3, "best": 0.3}


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _question(i: int) -> str:
    if i < len(XSS):
        return f"Question {i} about {XSS[i]} and grading?"
    return f"How is part {i} of the course graded ($5 fee, 50% rule)?"


def _answer(model: str, i: int) -> str:
    planted = XSS[i % len(XSS)] if model in ("epoch-1", "base") and i < 6 else ""
    return f"Answer of {model} to question {i}. {planted}".strip()


def _metrics(rng: np.random.Generator, model: str, effect: float) -> dict[str, float | None]:
    r1 = float(np.clip(0.25 + effect + rng.normal(0, 0.08), 0, 1))
    nll = None if model == "retrieval" else float(3.0 - 2 * effect + rng.normal(0, 0.2))
    return {
        "rouge1": r1,
        "rouge2": r1 * 0.6,
        "rougeL": r1 * 0.9,
        "bleu": r1 * 0.4,
        "semantic": float(np.clip(0.5 + effect + rng.normal(0, 0.05), 0, 1)),
        "token_f1": r1 * 0.95,
        "exact_match": float(r1 > 0.6),
        "answer_nll": nll,
    }


def _ci(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    idx = rng.integers(0, len(values), size=(400, len(values)))
    boot = values[idx].mean(axis=1)
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def scores_from(generations: list[dict], name: str, rng: np.random.Generator) -> dict:
    """Means, bootstrap CIs and paired comparisons vs base, as the eval stage writes them."""
    per: dict[str, dict[str, list[float]]] = {}
    qids = sorted({g["question_id"] for g in generations})
    for g in generations:
        for m, v in g["metrics"].items():
            per.setdefault(g["model"], {}).setdefault(m, []).append(v)
    models, comparisons = {}, {}
    for model, mets in per.items():
        models[model] = {}
        for m, vals in mets.items():
            arr = np.array([v for v in vals if v is not None], dtype=float)
            if arr.size:
                models[model][m] = {"mean": float(arr.mean()), "ci95": _ci(arr, rng)}
        if model == "base":
            continue
        comparisons[model] = {}
        for m in METRICS:
            pairs = [(a, b) for a, b in zip(mets[m], per["base"][m], strict=True) if a is not None]
            if not pairs:
                continue
            diffs = np.array([a - b for a, b in pairs])
            lo, hi = _ci(diffs, rng)
            boot = diffs[rng.integers(0, len(diffs), size=(400, len(diffs)))].mean(axis=1)
            p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
            comparisons[model][m] = {"diff": float(diffs.mean()), "ci95": [lo, hi], "p": p}
    stop = {m: float(np.mean([g["stopped"] for g in generations if g["model"] == m])) for m in per}
    kinds = {m: {"base": "base", "retrieval": "baseline"}.get(m, "fine-tuned") for m in per}
    return {
        "name": name,
        "n": len(qids),
        "source": f"data/{name}.jsonl",
        "metrics": METRICS,
        "models": models,
        "kinds": kinds,
        "comparisons": comparisons,
        "stop_rate": stop,
        "unavailable": {"bertscore": "roberta-large is not available offline"},
        "warnings": [],
    }


def write_eval(
    run: Path, name: str = "test", n: int = 12, effects: dict[str, float] | None = None, seed: int = 0
) -> dict:
    effects = effects or DEFAULT_EFFECTS
    rng = np.random.default_rng(seed)
    gens = []
    for model in effects:
        for i in range(n):
            gens.append(
                {
                    "model": model,
                    "question_id": f"q{i}",
                    "question": _question(i),
                    "reference": f"Reference answer {i} {XSS[i % 3] if i < 3 else ''}".strip(),
                    "answer": _answer(model, i),
                    "metrics": _metrics(rng, model, effects[model]),
                    "stopped": model == "retrieval" or i % 5 != 0,
                    "new_tokens": 20 + i,
                }
            )
    folder = run / "eval" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens), encoding="utf-8")
    scores = scores_from(gens, name, rng)
    _dump(folder / "scores.json", scores)
    combined = []
    for i in range(n):
        by = {g["model"]: g for g in gens if g["question_id"] == f"q{i}"}
        combined.append(
            {
                "question": _question(i),
                "reference_answer": by["base"]["reference"],
                "base_model_response": by["base"]["answer"],
                "fine_tuned_model_responses": {m: by[m]["answer"] for m in by if m != "base"},
            }
        )
    _dump(folder / "combined_responses.json", combined)
    return scores


def write_data(run: Path) -> None:
    _dump(
        run / "data" / "report.json",
        {
            "valid_pairs": 100,
            "splits": {"train": 80, "val": 10, "test": 10, "train_augmented": 0},
            "dropped": [{"row": 7, "reason": f"empty answer {XSS[0]}"}, {"row": 12, "reason": "duplicate of row 3"}],
            "warnings": [f"cell looks like markup: {x}" for x in XSS],
            "source": {
                "path": f"/data/QA {XSS[1]}.xlsx",
                "sha256": "ab" * 32,
                "sheet": f"Sheet{XSS[2]}",
                "question_col": "Question",
                "answer_col": "Answer",
                "header_row": 1,
            },
        },
    )
    config = {
        "model": "default",
        "trust_remote_code": False,
        "allow_pickle": False,
        "prepare": {"val_frac": 0.1, "test_frac": 0.1, "seed": 42},
        "train": {"epochs": [1, 2], "sweep": "one-pass", "lora_r": 8, "lr": 0.0002},
        "eval": {"max_new_tokens": 256},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def write_train(run: Path, epochs: int = 2, steps_per_epoch: int = 10) -> None:
    rows = []
    for step in range(1, epochs * steps_per_epoch + 1):
        epoch = step / steps_per_epoch
        rows.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": 3.0 / (1 + step / 5),
                "lr": 2e-4,
                "grad_norm": 1.0,
                "tokens_per_second": 900.0,
            }
        )
        if step % steps_per_epoch == 0:
            rows.append({"step": step, "epoch": epoch, "eval_loss": 2.0 - 0.3 * epoch})
    (run / "train").mkdir(parents=True, exist_ok=True)
    (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _dump(
        run / "train" / "summary.json",
        {
            "train_seconds": 125.3,
            "epochs_run": epochs,
            "train_examples": 80,
            "train_tokens": 5120,
            "answer_tokens": 2100,
            "tokens_per_second": 910.5,
            "peak_memory_bytes": 1_500_000_000,
            "device": "cpu",
            "quantization": "none",
            "precision": "fp32",
            "sweep": "one-pass",
            "best_epoch": epochs,
            "epochs": list(range(1, epochs + 1)),
            "eval_loss_by_epoch": {str(e): 2.0 - 0.3 * e for e in range(1, epochs + 1)},
            "input_hash": "abc",
            "eval_seconds": 8.0,
            "examples_per_second": 0.638,
            "epochs_requested": list(range(1, epochs + 1)),
            "epochs_not_reached": [],
            "stopped_early": False,
            "placement_reason": "CPU: plain LoRA (bitsandbytes k-bit is a CUDA path)",
            "best_eval_loss": 2.0 - 0.3 * epochs,
            "batch_size": 4,
            "grad_accum": 1,
            "world_size": 1,
            "train_pairs": 40,
            "val_pairs": 5,
            "model_path": f"/models/{XSS[0]}",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
            "finished_at": "2026-01-02T03:04:05+00:00",
        },
    )


def make_run(
    root: Path,
    *,
    train: bool = True,
    evals: tuple[str, ...] = ("test",),
    n: int = 12,
    effects: dict[str, float] | None = None,
) -> Path:
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    write_data(run)
    if train:
        write_train(run)
    for i, name in enumerate(evals):
        write_eval(run, name, n=n, effects=effects, seed=i)
    return run
