"""What every benchmark records: the machine, its load, peak memory, and the JSON results file. Also runs one
side of a comparison in a child process, so each side's peak RSS is its own and neither warms the other's caches."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from qatune.manifest import cpu_model, git_commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CHILD_TAG = "BENCH-RESULT "
# set to emulate a CPU without AVX-512 on one that has it (fp32 kernels limited to AVX2), e.g.
# ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return [f for f in line.split(":", 1)[1].split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")]
    except OSError:
        pass
    return []


def ram_gib() -> float:
    try:
        kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        return round(kb / 2**20, 1)
    except (OSError, StopIteration):
        return 0.0


def machine() -> dict:
    import torch

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ},
        "ram_gib": ram_gib(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 30.0) -> float:
    """Block until the 1-minute load average is below `max_load` (or the timeout); returns it."""
    deadline = time.monotonic() + timeout_s
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(poll_s)
        load = os.getloadavg()[0]
    return load


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat, all cores)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def snapshot() -> tuple[float, float, float]:
    return _busy_seconds(), _own_seconds(), time.monotonic()


def other_cores(since: tuple[float, float, float]) -> float:
    """Average number of cores that processes other than this one and its finished children kept busy since
    `since` (0 = a quiet machine; children still running count as others)."""
    busy, own, start = since
    wall = time.monotonic() - start
    return round(max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own)) / max(wall, 1e-9), 2)


def run_child(script: Path, args: list[str], env: dict | None = None) -> dict:
    """Run `script` with `args` in a fresh interpreter and return the JSON it tags on stdout, plus
    `other_cores` (see other_cores) over the child's run."""
    since = snapshot()
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    others = other_cores(since)
    tagged = [line[len(CHILD_TAG) :] for line in proc.stdout.splitlines() if line.startswith(CHILD_TAG)]
    if proc.returncode != 0 or not tagged:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{script.name} {' '.join(args)} failed (exit {proc.returncode})")
    return {**json.loads(tagged[-1]), "other_cores": others}


def emit(result: dict) -> None:
    """A child's result with its peak RSS and torch threads, tagged so the parent finds it among other output."""
    import torch

    result = {**result, "peak_rss_gib": gib(peak_rss_bytes()), "threads": torch.get_num_threads()}
    print(CHILD_TAG + json.dumps(result), flush=True)


def child_args(opts: dict[str, object]) -> list[str]:
    """Command-line flags for a child: `--name value`, a bare `--name` for True, nothing for None."""
    return [x for k, v in opts.items() if v is not None for x in ((f"--{k}",) if v is True else (f"--{k}", str(v)))]


def save(name: str, record: dict) -> Path:
    """Append one record (with date and machine) to benchmarks/results/NAME.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    when = dt.datetime.now().isoformat(timespec="seconds")
    rows.append({"date": when, "machine": machine(), "git": git_commit(), **record})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(path)
    return path


def tiny_model(folder: Path) -> Path:
    """The test suite's 2-layer random chat model (for --tiny dry runs)."""
    if not (folder / "config.json").exists():
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import build_tiny_model

        build_tiny_model(folder)
    return folder
