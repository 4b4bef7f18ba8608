"""Run directories for the report tests. The eval sets are scored by the real `evaluate` code on the
prompt-sensitive tiny model (built once per session, then copied), so the report reads what the eval stage
writes; the data report, config and training metrics and summary are written by hand (fixed numbers for the
formatting tests).

The scored run has three eval sets, each with its own outcome, chosen through the references: `test`
(references are epoch-2's answers, reworded a little: epoch-2 beats base), `paraphrased` (references are base's
answers: no fine-tuned model beats base) and `lookup` (the training pairs themselves: retrieval beats every model).
Questions and training answers carry markup, so the report must escape what eval saved."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import yaml

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</td></tr></table>"]
MODELS = ["base", "retrieval", "epoch-1", "epoch-2", "best"]
N = 12
TOKENS = 8


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _question(i: int) -> str:
    if i < len(XSS):
        return f"Question {i} about {XSS[i]} and grading?"
    return f"How is part {i} of the course graded ($5 fee, 50% rule)?"


def _training_pair(i: int) -> tuple[str, str]:
    planted = f" {XSS[i % len(XSS)]}" if i < 6 else ""
    return f"Where is lecture {i} held?", f"Lecture {i} is in Room {100 + i} on Monday.{planted}"


def _reordered(answer: str) -> str:
    """A reference close to `answer` but not equal: its first word moved to the end and words added, so ROUGE-1,
    ROUGE-2 and ROUGE-L differ (a table that shows one metric's numbers under another's name is caught)."""
    words = answer.split()
    return " ".join([*words[1:], *words[:1], "as", "the", "syllabus", "says"])


def _write_questions(path: Path, pairs: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer"])
        writer.writerows(pairs)
    return path


def build_scored(run: Path, model_dir: Path) -> Path:
    """A run on `model_dir` with two adapters (best = a copy of epoch-2) and the three eval sets, each written
    by `qatune.evaluate.answer.evaluate`."""
    from eval_run import save_adapter
    from qatune.config import load_for_run
    from qatune.evaluate.answer import evaluate
    from qatune.generate import load_engine
    from qatune.prompts import messages_for
    from qatune.storage import write_jsonl

    train = [_training_pair(i) for i in range(N)]
    rows = [{"id": f"tr{i}", "question": q, "answer": a, "source_row": i + 2} for i, (q, a) in enumerate(train)]
    write_jsonl(run / "data" / "train.jsonl", rows)
    settings = {"precision": "fp32"}  # answers do not depend on how a batch is laid out
    config = {"model": str(model_dir), "train": settings, "eval": {"max_new_tokens": TOKENS, "batch_size": 16}}
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for epoch in (1, 2):
        save_adapter(model_dir, run / "models" / f"epoch-{epoch}", seed=epoch)
    shutil.copytree(run / "models" / "epoch-2", run / "models" / "best")
    config = load_for_run(run, None, {}, save=False)

    questions = [_question(i) for i in range(N)]
    reworded = [f"Could you tell me how item {i} counts toward the grade?" for i in range(N)]
    engine = load_engine(run, config, ["epoch-2"])
    tuned = [g.text for g in engine.generate("epoch-2", [messages_for(q) for q in questions], max_new_tokens=TOKENS)]
    plain = [g.text for g in engine.generate("base", [messages_for(q) for q in reworded], max_new_tokens=TOKENS)]
    del engine
    assert all(a.strip() for a in tuned + plain), "the tiny model gave an empty answer; pick other questions"
    tests = [
        {"id": f"te{i}", "question": q, "answer": _reordered(a), "source_row": i + 2}
        for i, (q, a) in enumerate(zip(questions, tuned, strict=True))
    ]
    write_jsonl(run / "data" / "test.jsonl", tests)
    evaluate(run, config)
    evaluate(run, config, questions=_write_questions(run / "paraphrased.csv", list(zip(reworded, plain, strict=True))))
    evaluate(run, config, questions=_write_questions(run / "lookup.csv", train))
    return run


def copy_eval(run: Path, scored: Path, source: str, name: str | None = None) -> dict:
    """Eval set `source` of the scored run into `run` as `name` (replacing one there); returns its scores."""
    target = run / "eval" / (name or source)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(scored / "eval" / source, target)
    return json.loads((target / "scores.json").read_text(encoding="utf-8"))


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


def make_run(root: Path, scored: Path, *, train: bool = True, evals: tuple[str, ...] = ("test",)) -> Path:
    """`evals`: names of the scored run's eval sets to copy in (any other name gets a copy of `test`)."""
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    write_data(run)
    if train:
        write_train(run)
    for name in evals:
        copy_eval(run, scored, name if (scored / "eval" / name).is_dir() else "test", name)
    return run
