"""`qatune run` as a user types it, timed from outside: a fresh working directory, an offline environment, the
wall time, the CPU time other processes took meanwhile, and the stage times the run printed. Also which models
a finished run's eval stage generated answers for (its time is shared among them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import record

STAGE_LINE = re.compile(r"^\s*([\w:.-]+): done in ([\d.]+)s", re.MULTILINE)
SUMMARY_LINE = re.compile(r"^stages: (.*) \(total", re.MULTILINE)


def stage_seconds(output: str) -> dict[str, float]:
    """Seconds per stage from a run's output: the `NAME: done in X.Ys` lines, else the final `stages:` line
    (whole seconds; the only one a --quiet run prints)."""
    stages = {name: float(s) for name, s in STAGE_LINE.findall(output)}
    if stages:
        return stages
    found = SUMMARY_LINE.findall(output)
    if not found:
        return {}
    parts = (part.rsplit(" ", 1) for part in found[-1].split(", "))
    return {name: float(s.rstrip("s")) for name, s in parts}


def qatune_run(args: list[str], work: Path, home: Path | None = None) -> dict:
    """Run `qatune ARGS...` (args start with "run") in `work`; exits with the run's output tail on failure.
    `started_at` is the Unix time just before the process starts (file times of the run compare with it)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
        "COLUMNS": "200",
    }
    if home is not None:
        env["QATUNE_HOME"] = str(home)
    work.mkdir(parents=True, exist_ok=True)
    qatune = Path(sys.executable).with_name("qatune")
    since = record.snapshot()
    started_at = time.time()
    start = time.perf_counter()
    proc = subprocess.run([str(qatune), *args], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    others = record.other_cores(since)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(output[-6000:])
        raise SystemExit(f"qatune {' '.join(args)} failed with exit code {proc.returncode}")
    return {
        "command": "qatune " + " ".join(args),
        "started_at": started_at,
        "wall_s": round(wall, 1),
        "other_cores": others,
        "stages_s": stage_seconds(output),
        "output": output,
    }


def generating_models(run: Path, eval_set: str = "test") -> list[str]:
    """Models the eval stage generated answers for: not the retrieval baseline, not an adapter with the same
    weights as an earlier one (`best` is a copy of an epoch; its answers are copied)."""
    inputs = json.loads((run / "eval" / eval_set / "inputs.json").read_text())
    seen, out = set(), []
    for name, fingerprint in inputs["models"].items():
        if name == "retrieval" or (name != "base" and fingerprint in seen):
            continue
        seen.add(fingerprint)
        out.append(name)
    return out
