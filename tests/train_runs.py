"""Run directories for training tests: short synthetic question/answer pairs written as RUN/data/*.jsonl
(the files `qatune prepare` writes), a tiny-model config, and readers for saved adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def pairs(n: int, start: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + n):
        rows.append(
            {
                "id": f"p{i:03d}",
                "question": f"Where is lecture {i}?",
                "answer": f"Lecture {i} is in Room {100 + i} on {DAYS[i % 5]} at {9 + i % 4}:00."
                + " Bring notes." * (i % 3),
                "source_row": i + 2,
            }
        )
    return rows


def write_data(run: Path, n_train: int = 20, n_val: int = 4) -> Path:
    from qatune.storage import write_jsonl

    write_jsonl(run / "data" / "train.jsonl", pairs(n_train))
    write_jsonl(run / "data" / "val.jsonl", pairs(n_val, start=n_train))
    return run


def train_settings(model_dir: Path, **train: Any) -> dict[str, Any]:
    # small adapters and closed-book examples only: these runs test the loop's mechanics, not the recipe
    settings = {"epochs": [1, 2], "lr": 5e-3, "threads": 1, "max_length": 96, "warmup_steps": 2}
    settings["lr_schedule"] = "constant"
    settings.update(lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], grounded=False)
    settings.update(train)
    return {"model": str(model_dir), "train": settings}


def config(model_dir: Path, **train: Any):
    from qatune.config import load

    return load(None, train_settings(model_dir, **train))


def write_config(path: Path, model_dir: Path, **train: Any) -> Path:
    path.write_text(yaml.safe_dump(train_settings(model_dir, **train)), encoding="utf-8")
    return path


def adapter(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    import torch

    left, right = adapter(a), adapter(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{key} differs between {a} and {b}"
