"""The unchanged `qatune train` command under `accelerate launch` or `torchrun` with 2 CPU processes (DDP, gloo)
trains the same adapter shapes with the single-process loss curve; only the main process writes files."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qatune import train as train_mod
from qatune.rundir import RunDir
from qatune.storage import read_json, read_jsonl
from train_runs import adapter, config, write_config, write_data

SETTINGS = {"epochs": [2], "batch_size": 4, "lora_dropout": 0.0, "precision": "fp32"}  # exact comparison


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher(kind: str) -> list[str]:
    """`accelerate launch ...` or `torchrun ... -m qatune --` (torchrun's parser would take `--run` for its own
    `--run-path`; everything after `--` goes to qatune)."""
    exe = Path(sys.executable).with_name(kind)
    if not exe.exists() and shutil.which(kind) is None:
        pytest.skip(f"{kind} launcher not installed")
    exe_name = str(exe if exe.exists() else kind)
    port = str(_free_port())
    if kind == "torchrun":
        return [exe_name, "--nproc-per-node", "2", "--master-port", port, "-m", "qatune", "--"]
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    return [exe_name, "launch", *flags, "--dynamo_backend", "no", "--main_process_port", port, "-m", "qatune"]


@pytest.mark.parametrize("kind", ["accelerate", "torchrun"])
def test_two_process_ddp_matches_single_process(tiny_model_dir, tmp_path, kind):
    single = write_data(tmp_path / "single", n_train=16, n_val=4)
    train_mod.train(single, config(tiny_model_dir, **SETTINGS))

    run = write_data(tmp_path / "ddp", n_train=16, n_val=4)
    cfg = write_config(tmp_path / "train.yaml", tiny_model_dir, **SETTINGS)
    cmd = [*_launcher(kind), "train", "--run", str(run), "--config", str(cfg), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = read_json(RunDir(run).train_summary_json)
    assert summary["world_size"] == 2
    ddp_rows, single_rows = read_jsonl(RunDir(run).metrics_jsonl), read_jsonl(RunDir(single).metrics_jsonl)
    assert len(ddp_rows) == len(single_rows)  # one writer: each step logged once
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert a["step"] == b["step"]
        key = "loss" if "loss" in a else "eval_loss"
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5)
    ddp, ref = adapter(RunDir(run).model_dir("epoch-2")), adapter(RunDir(single).model_dir("epoch-2"))
    assert ddp.keys() == ref.keys()
    for key in ref:
        assert ddp[key].shape == ref[key].shape
        torch.testing.assert_close(ddp[key], ref[key], rtol=1e-3, atol=1e-5)
