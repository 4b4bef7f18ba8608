"""`qatune train` killed with SIGKILL (right after its first checkpoint, then mid-epoch while resuming) and
stopped with Ctrl-C, then `--resume`d each time, ends with the adapters of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qatune import train as train_mod
from qatune.rundir import RunDir
from qatune.train import checkpoint
from train_runs import assert_same_adapter, config, write_config, write_data

SETTINGS = {"epochs": [1, 3], "checkpoint_steps": 5, "batch_size": 1}


def _start(run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qatune", "train", "--run", str(run), "--quiet", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _stop_when(proc: subprocess.Popen, ready, sig: int) -> tuple[int, str]:
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"training ended before the interruption point:\n{proc.stderr.read()}"
        assert time.monotonic() < deadline, "interruption point never reached"
        time.sleep(0.003)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_killed_and_interrupted_training_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    reference = write_data(tmp_path / "reference", n_train=40)
    train_mod.train(reference, config(tiny_model_dir, **SETTINGS))

    run = write_data(tmp_path / "run", n_train=40)
    rundir = RunDir(run)
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, **SETTINGS)

    # 1. SIGKILL as soon as the first checkpoint exists
    code, _ = _stop_when(
        _start(run, "--config", str(cfg)), lambda: checkpoint.latest(rundir.checkpoints_dir) is not None, signal.SIGKILL
    )
    assert code == -signal.SIGKILL and not rundir.train_summary_json.exists()
    first = checkpoint.read_progress(checkpoint.latest(rundir.checkpoints_dir))["global_step"]

    # 2. resume, then SIGKILL mid-epoch 2, between checkpoints
    code, _ = _stop_when(_start(run, "--resume"), lambda: _lines(rundir.metrics_jsonl) >= 40 + 1 + 12, signal.SIGKILL)
    assert code == -signal.SIGKILL and not rundir.train_summary_json.exists()
    second = checkpoint.read_progress(checkpoint.latest(rundir.checkpoints_dir))["global_step"]
    assert second > first

    # 3. resume, then Ctrl-C: checkpoint and a one-line hint, exit 130
    code, err = _stop_when(_start(run, "--resume"), lambda: _lines(rundir.metrics_jsonl) >= 80 + 2 + 5, signal.SIGINT)
    assert code == 130, err
    assert f"qatune train --run {rundir.root} --resume" in err and "Traceback" not in err
    assert not rundir.train_summary_json.exists()

    # without --resume the command says what to do instead of starting over
    proc = subprocess.run(
        [sys.executable, "-m", "qatune", "train", "--run", str(run), "--quiet"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--resume" in proc.stderr

    # 4. resume to the end
    proc = subprocess.run(
        [sys.executable, "-m", "qatune", "train", "--run", str(run), "--resume", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("epoch-1", "epoch-3", "best"):
        assert_same_adapter(rundir.model_dir(name), RunDir(reference).model_dir(name))
