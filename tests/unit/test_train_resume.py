"""Interruption in-process: Ctrl-C saves a checkpoint and `resume` ends on the uninterrupted adapter; a run
with checkpoints needs --resume; a NaN loss stops with the last good checkpoint kept; a full disk while
checkpointing keeps the previous checkpoint."""

from __future__ import annotations

import errno

import pytest
import torch

from qatune import train as train_mod
from qatune.console import QatuneError
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.train import checkpoint, loop
from qatune.train.loss import AnswerLoss
from train_runs import assert_same_adapter, config, write_data

SETTINGS = {"epochs": [1, 2], "checkpoint_steps": 3}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    run = write_data(tmp_path_factory.mktemp("ref") / "run")
    train_mod.train(run, config(tiny_model_dir, **SETTINGS))
    return RunDir(run)


def _stop_after(monkeypatch, n_steps):
    calls = {"n": 0}

    def agreed(self, s):
        calls["n"] += 1
        return calls["n"] >= n_steps

    monkeypatch.setattr(loop.StopRequest, "agreed", agreed)


@pytest.mark.parametrize("stop_at", [4, 10])  # mid-epoch 1; last step of epoch 1 (stops after its checkpoint)
def test_interrupt_then_resume_gives_the_uninterrupted_adapter(
    reference, tiny_model_dir, tmp_path, monkeypatch, stop_at
):
    run = write_data(tmp_path / "run")
    cfg = config(tiny_model_dir, **SETTINGS)
    _stop_after(monkeypatch, stop_at)
    with pytest.raises(loop.TrainingInterrupted, match="--resume"):
        train_mod.train(run, cfg)
    rundir = RunDir(run)
    assert checkpoint.latest(rundir.checkpoints_dir) is not None and not rundir.train_summary_json.exists()
    monkeypatch.undo()
    with pytest.raises(QatuneError, match="unfinished training found.*--resume"):
        train_mod.train(run, cfg)
    summary = train_mod.train(run, cfg, resume=True).to_json()
    for name in ("epoch-1", "epoch-2", "best"):
        assert_same_adapter(rundir.model_dir(name), reference.model_dir(name))
    assert summary["steps"] == 20 and summary["train_examples"] == 40
    steps = [r["step"] for r in read_jsonl(rundir.metrics_jsonl) if "loss" in r]
    assert steps == list(range(1, 21))  # work redone after the checkpoint is logged once


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_model_dir, tmp_path, monkeypatch, capsys):
    run = write_data(tmp_path / "run")
    _stop_after(monkeypatch, 4)
    with pytest.raises(loop.TrainingInterrupted):
        train_mod.train(run, config(tiny_model_dir, **SETTINGS))
    monkeypatch.undo()
    changed = config(tiny_model_dir, **SETTINGS, lr=1e-3)
    assert train_mod.can_resume(run, config(tiny_model_dir, **SETTINGS)) and not train_mod.can_resume(run, changed)
    with pytest.raises(QatuneError, match="other data or settings"):
        train_mod.train(run, changed, resume=True)
    train_mod.train(run, changed)  # without --resume: starts over, discarding the stale checkpoint
    assert "discarding" in capsys.readouterr().err


def test_resume_without_a_checkpoint_starts_from_scratch(tiny_model_dir, tmp_path, reference):
    run = write_data(tmp_path / "run")
    train_mod.train(run, config(tiny_model_dir, **SETTINGS), resume=True)
    assert_same_adapter(RunDir(run).model_dir("epoch-2"), reference.model_dir("epoch-2"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    real = AnswerLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        loss, n = real(self, *args, **kwargs)
        calls["n"] += torch.is_grad_enabled()  # count training forwards only
        return (loss * torch.nan if calls["n"] == 5 and torch.is_grad_enabled() else loss), n

    monkeypatch.setattr(AnswerLoss, "forward", poisoned)
    run = write_data(tmp_path / "run")
    with pytest.raises(QatuneError, match=r"training loss became nan at epoch 1, step 5.*ckpt-000001"):
        train_mod.train(run, config(tiny_model_dir, **SETTINGS))
    rundir = RunDir(run)
    last = checkpoint.latest(rundir.checkpoints_dir)
    assert checkpoint.read_progress(last)["global_step"] == 3
    assert not rundir.train_summary_json.exists() and not rundir.model_dir("epoch-1").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch):
    real = checkpoint._save_tensors
    calls = {"n": 0}

    def disk_full(path, tensors):
        calls["n"] += 1
        if calls["n"] == 3:  # the second checkpoint's first file
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, tensors)

    monkeypatch.setattr(checkpoint, "_save_tensors", disk_full)
    run = write_data(tmp_path / "run")
    with pytest.raises(QatuneError, match="No space left on device.*ckpt-000001 is intact.*--resume"):
        train_mod.train(run, config(tiny_model_dir, **SETTINGS))
    rundir = RunDir(run)
    assert [p.name for p in rundir.checkpoints_dir.iterdir()] == ["ckpt-000001"]
    assert checkpoint.read_progress(rundir.checkpoints_dir / "ckpt-000001")["global_step"] == 3


def test_independent_sweep_resumes_inside_its_second_run(tiny_model_dir, tmp_path, monkeypatch):
    settings = {**SETTINGS, "sweep": "independent"}
    reference = write_data(tmp_path / "reference")
    train_mod.train(reference, config(tiny_model_dir, **settings))
    run = write_data(tmp_path / "run")
    _stop_after(monkeypatch, 15)  # run "1" has 10 steps; stop in the first epoch of run "2"
    with pytest.raises(loop.TrainingInterrupted):
        train_mod.train(run, config(tiny_model_dir, **settings))
    assert RunDir(run).model_dir("epoch-1").exists() and not RunDir(run).model_dir("epoch-2").exists()
    monkeypatch.undo()
    train_mod.train(run, config(tiny_model_dir, **settings), resume=True)
    for name in ("epoch-1", "epoch-2", "best"):
        assert_same_adapter(RunDir(run).model_dir(name), RunDir(reference).model_dir(name))
