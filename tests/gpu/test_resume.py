"""Resume after a kill on CUDA: `qatune train` on the 4-bit base, killed (SIGKILL) as soon as its first
checkpoint exists (with the CUDA RNG state in it), then `--resume`d, continues from that checkpoint: the steps
logged before it are kept as they were, none is logged twice, and the adapters match an uninterrupted run's to
within the GPU's run-to-run noise (its attention backward adds in no fixed order)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from qatune import train as train_mod
from qatune.rundir import RunDir
from qatune.storage import read_json, read_jsonl
from qatune.train import checkpoint
from train_runs import adapter, config, write_config, write_data

pytestmark = pytest.mark.gpu
SETTINGS = {"epochs": [1, 2], "checkpoint_steps": 4, "batch_size": 2}


def _train(run, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qatune", "train", "--run", str(run), "--quiet", *extra]


def _steps(rundir: RunDir) -> list[dict]:
    """The training-step rows of metrics.jsonl (the epoch-end evaluation rows carry `eval_loss` instead)."""
    return [r for r in read_jsonl(rundir.metrics_jsonl) if "loss" in r]


def test_killed_training_resumes_from_its_checkpoint(gpu, gpu_model, tmp_path):
    reference = write_data(tmp_path / "reference", n_train=24)
    expected = train_mod.train(reference, config(gpu_model, **SETTINGS)).to_json()
    assert expected["quantization"] == gpu.quant

    run = write_data(tmp_path / "run", n_train=24)
    rundir = RunDir(run)
    settings = write_config(tmp_path / "train.yaml", gpu_model, **SETTINGS)
    proc = subprocess.Popen(_train(run, "--config", str(settings)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while checkpoint.latest(rundir.checkpoints_dir) is None:
        assert proc.poll() is None, f"training ended before its first checkpoint:\n{proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not rundir.train_summary_json.exists()

    saved = checkpoint.latest(rundir.checkpoints_dir)
    step = checkpoint.read_progress(saved)["global_step"]
    if gpu.cuda:
        from safetensors import safe_open

        with safe_open(str(saved / "optimizer.safetensors"), framework="pt") as tensors:
            assert "rng.cuda.0" in set(tensors.keys()), "the checkpoint must hold the CUDA RNG state"
    before = [r for r in _steps(rundir) if r["step"] <= step]
    assert [r["step"] for r in before] == list(range(1, step + 1))

    done = subprocess.run(_train(run, "--resume"), capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert done.returncode == 0, done.stderr
    summary = read_json(rundir.train_summary_json)
    assert summary["quantization"] == gpu.quant and summary["steps"] == expected["steps"] > step
    rows = _steps(rundir)
    assert [r["step"] for r in rows] == list(range(1, expected["steps"] + 1)), "each step logged once"
    assert rows[:step] == before, "the steps before the checkpoint are kept, not redone"
    for name in ("epoch-1", "epoch-2", "best"):
        got, want = adapter(rundir.model_dir(name)), adapter(RunDir(reference).model_dir(name))
        assert got.keys() == want.keys()
        for key in (k for k in want if "lora_B" in k):  # lora_B starts at zero: its norm is what training did
            drift = ((got[key].float() - want[key].float()).norm() / want[key].float().norm()).item()
            assert drift < 0.1, f"{name} {key}: {drift:.3f} of the trained update away from an uninterrupted run"
