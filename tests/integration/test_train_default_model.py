"""The real default model on 20 pairs of the example syllabus for one epoch: the loss falls, the adapter loads
back through model.load_adapters and makes the reference answers of training questions more likely."""

from __future__ import annotations

import pytest
import torch

from example_runs import example_pairs
from qatune.config import load
from qatune.models.load import load_base, load_tokenizer
from qatune.models.lora import load_adapters
from qatune.models.placement import choose_placement
from qatune.models.resolve import resolve_model
from qatune.prompts import encode_pair
from qatune.rundir import RunDir
from qatune.storage import read_jsonl, write_jsonl
from qatune.train import train

pytestmark = pytest.mark.slow


def _nll(model, tok, rows) -> float:
    """Mean negative log-likelihood per answer token of the reference answers."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            enc = encode_pair(tok, row["question"], row["answer"], 512)
            ids = torch.tensor([enc.input_ids])
            labels = torch.tensor([enc.labels])
            logits = model(input_ids=ids).logits[0, :-1]
            keep = labels[0, 1:] != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[0, 1:][keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def test_one_epoch_on_example_pairs_moves_answers_toward_the_references(tmp_path):
    rows = example_pairs(24)
    run = tmp_path / "run"
    write_jsonl(run / "data" / "train.jsonl", rows[:20])
    write_jsonl(run / "data" / "val.jsonl", rows[20:])
    summary = train(run, load(None, {"train": {"epochs": [1], "lr": 1e-3, "warmup_steps": 2}})).to_json()

    losses = [r["loss"] for r in read_jsonl(RunDir(run).metrics_jsonl) if "loss" in r]
    assert all(loss == loss for loss in losses) and len(losses) >= 6
    assert summary["examples_per_second"] > 0 and summary["peak_memory_bytes"] > 0

    path = resolve_model("default")
    tok = load_tokenizer(path)
    base = load_base(path, choose_placement("none", "fp32"))
    base.eval()
    before, val_before = _nll(base, tok, rows[:6]), _nll(base, tok, rows[20:])
    tuned = load_adapters(base, {"epoch-1": RunDir(run).model_dir("epoch-1")})
    tuned.set_adapter("epoch-1")
    tuned.eval()
    after = _nll(tuned, tok, rows[:6])
    assert after < before * 0.9, (before, after)
    assert summary["eval_loss_by_epoch"]["1"] < val_before  # validation loss fell from the base model's
