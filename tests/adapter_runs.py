"""A run directory with two saved LoRA adapters on the tiny test model (no training): each adapter's
lora_B weights are drawn from its own seed so the two answer differently. Used by chat, serve and export tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

QUESTIONS = [
    "Who is the instructor?",
    "How is the grade computed?",
    "What is the title of this course?",
    "When is the final project due?",
    "Where are the lectures?",
]
ADAPTER_SEEDS = {"epoch-1": 1, "epoch-2": 2}


def save_adapter(model_dir: Path, target: Path, seed: int) -> None:
    import torch

    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import attach_lora, lora_config
    from qatune.models.placement import choose_placement

    base = load_base(str(model_dir), choose_placement())
    torch.manual_seed(seed)  # lora_A is drawn from the global generator: fix it, or answers depend on test order
    model = attach_lora(base, lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(str(target))
    load_tokenizer(str(model_dir)).save_pretrained(str(target))


def make_run(root: Path, model_dir: Path, seeds: dict[str, int] | None = None) -> Path:
    """RUN/config.yaml naming the tiny model, RUN/models/<name> per adapter, and a data report."""
    from qatune.config import Config
    from qatune.rundir import RunDir

    run = RunDir(root)
    run.root.mkdir(parents=True, exist_ok=True)
    config = Config().model_dump(mode="json")
    config["model"] = str(model_dir)
    config["train"]["precision"] = "fp32"  # exact comparisons; the tiny adapters' effect is below bf16 rounding
    run.config_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    for name, seed in (seeds or ADAPTER_SEEDS).items():
        save_adapter(model_dir, run.model_dir(name), seed)
    run.data_dir.mkdir(parents=True, exist_ok=True)
    run.data_report_json.write_text(
        json.dumps(
            {
                "valid_pairs": 48,
                "splits": {"train": 38, "val": 5, "test": 5, "train_augmented": 0},
                "dropped": [{"row": 7, "reason": "empty answer"}],
                "warnings": [],
                "source": {
                    "path": "/data/QA_pair.xlsx",
                    "sha256": "ab" * 32,
                    "sheet": "Sheet1",
                    "question_col": "Question",
                    "answer_col": "Answer",
                    "header_row": 1,
                },
            }
        )
    )
    return run.root


def run_engine(root: Path, model_dir: Path):
    """The engine of a fresh run made by `make_run`: the base with both adapters loaded on it."""
    from qatune.config import load_for_run
    from qatune.generate import load_engine

    run = make_run(root, model_dir)
    return load_engine(run, load_for_run(run, None, {}, save=False))
