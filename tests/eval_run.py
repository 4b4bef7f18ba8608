"""A real, small run directory for the eval tests: data splits, config.yaml pointing at the tiny model,
and LoRA adapters made with peft on it and saved as safetensors under RUN/models/."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import yaml

TRAIN = [
    ("Who is the instructor of the course?", "Professor Ada Lovelace teaches the course."),
    ("How is the final grade computed?", "Homework 40%, midterm 20%, final project 40%."),
    ("What is the title of this course?", "The course is Deep Learning."),
    ("When are the lectures held?", "On Mondays at 10:00 in Room 101."),
    ("Is there a final exam?", "No, there is a final project instead of an exam."),
]
TEST = [
    ("Which professor teaches this class?", "Professor Ada Lovelace teaches the course."),
    ("How are grades calculated?", "Homework 40%, midterm 20%, final project 40%."),
    ("What's the name of the course?", "The course is Deep Learning."),
    ("At what time do lectures take place?", "On Mondays at 10:00 in Room 101."),
    ("Do we have a final examination?", "No, there is a final project instead of an exam."),
    ("Where is the classroom?", "Room 101."),
]


def _rows(pairs: list[tuple[str, str]], prefix: str, start: int = 2) -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "question": q, "answer": a, "source_row": start + i} for i, (q, a) in enumerate(pairs)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def save_adapter(model_dir: Path, folder: Path, seed: int) -> None:
    """A LoRA adapter on the tiny model with random non-zero B, so it answers differently from base."""
    import torch

    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import attach_lora, lora_config
    from qatune.models.placement import choose_placement

    torch.manual_seed(seed)  # lora_A comes from the global generator too
    model = attach_lora(load_base(str(model_dir), choose_placement()), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(str(model_dir)).save_pretrained(folder)


def make_run(root: Path, model_dir: Path, epochs: tuple[int, ...] = (1,), test: list | None = None) -> Path:
    train = _rows(TRAIN, "tr")
    train.append(
        {
            "id": "tr-aug",
            "question": "Where is the classroom?",
            "answer": "AUGMENTED ROW",
            "source_row": 99,
            "augmented_from": "tr3",
        }
    )
    write_jsonl(root / "data" / "train.jsonl", train)
    write_jsonl(root / "data" / "val.jsonl", _rows(TRAIN[:1], "va"))
    write_jsonl(root / "data" / "test.jsonl", _rows(test or TEST, "te"))
    config = {
        "model": str(model_dir),
        "train": {"precision": "fp32"},  # exact comparisons; the tiny adapters' effect is below bf16 rounding
        "eval": {"max_new_tokens": 6, "bootstrap": 200, "batch_size": 4},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for epoch in epochs:
        save_adapter(model_dir, root / "models" / f"epoch-{epoch}", seed=epoch)
    return root


def run_config(root: Path, **eval_overrides):
    from qatune import config as cfg

    return cfg.load_for_run(root, None, {"eval": eval_overrides}, save=False)


def ensure_load_questions(monkeypatch) -> None:
    """Use prepare's reader when present; otherwise a minimal CSV stand-in for these tests only."""
    try:
        from qatune.data.prepare import load_questions  # noqa: F401

        return
    except ImportError:
        pass
    import pandas as pd

    def load_questions(path, config):
        frame = pd.read_csv(path)
        return [
            {
                "id": f"q{i}",
                "question": str(r["Question"]).strip(),
                "answer": str(r["Answer"]).strip(),
                "source_row": i + 2,
            }
            for i, r in frame.iterrows()
        ]

    module = types.ModuleType("qatune.data.prepare")
    module.load_questions = load_questions
    monkeypatch.setitem(sys.modules, "qatune.data.prepare", module)
