"""End to end: `qatune run` with no arguments (example data, default sweep 3,4,6,8) as a user types it, in a
fresh working directory (so a fresh runs/example) with a fresh QATUNE_HOME, timed from the outside.

cold: QATUNE_HOME empty, so the first-run conversion of the default model is part of the run.
warm: QATUNE_HOME holds only the converted default model (copied in), as on every run after the first.

    .venv/bin/python benchmarks/end_to_end.py                # warm, then cold
    .venv/bin/python benchmarks/end_to_end.py --cache warm   # one of them
    .venv/bin/python benchmarks/end_to_end.py --tiny         # dry run: tiny model, 1-2 epochs, 8 new tokens
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
import timed_run  # noqa: E402

GOAL_S = 300.0


def one_run(kind: str, root: Path, extra: list[str], model_cache: Path | None) -> dict:
    home, work = root / f"home-{kind}", root / f"work-{kind}"
    work.mkdir(parents=True)
    home.mkdir(parents=True)
    if kind == "warm" and model_cache is not None:
        shutil.copytree(model_cache, home / "models" / model_cache.name)
    done = timed_run.qatune_run(["run", *extra], work, home)
    wall, others, output = done["wall_s"], done["other_cores"], done["output"]
    stages = done["stages_s"]
    run = work / "runs" / "example"
    summary = json.loads((run / "train" / "summary.json").read_text())
    scores = json.loads((run / "eval" / "test" / "scores.json").read_text())
    return {
        "cache": kind,
        "wall_s": round(wall, 1),
        "other_cores": others,
        "stages_s": stages,
        "shares": {k: round(v / wall, 3) for k, v in stages.items()},
        "outside_stages_s": round(wall - sum(stages.values()), 1),
        "converted_default_model": "converting" in output,
        "train_seconds_loop": summary["train_seconds"],
        "train_eval_seconds": summary.get("eval_seconds"),
        "epochs_run": summary["epochs_run"],
        "train_pairs": summary.get("train_pairs"),
        "batch_size": summary.get("batch_size"),
        "examples_per_s": summary.get("examples_per_second"),
        "test_questions": scores["n"],
        "models_scored": list(scores["models"]),
        "peak_memory_gib_train": record.gib(summary["peak_memory_bytes"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the run folders under this directory")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/end_to_end.json")
    args = ap.parse_args()
    extra: list[str] = []
    model_cache = None
    if args.tiny:
        tiny = record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny")
        extra = ["--model", str(tiny), "--epochs", "1,2", "--max-new-tokens", "8"]
    else:
        from qatune.models.resolve import resolve_model

        model_cache = Path(resolve_model("default"))
    root = Path(args.keep or tempfile.mkdtemp(prefix="qatune-e2e-"))
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    kinds = ["warm", "cold"] if args.cache == "both" else [args.cache]
    results = []
    for kind in kinds:
        load = os.getloadavg()[0]
        r = one_run(kind, root, extra, model_cache)
        r["load_before"] = round(load, 2)
        results.append(r)
        stages = ", ".join(f"{k} {v:.1f}s ({100 * r['shares'][k]:.0f}%)" for k, v in r["stages_s"].items())
        verdict = "met" if r["wall_s"] <= GOAL_S else "NOT met"
        print(
            f"{kind} cache: `qatune run` {r['wall_s']:.1f} s wall (goal <= {GOAL_S:.0f} s: {verdict}); {stages}; "
            f"outside stages {r['outside_stages_s']:.1f}s; training loop {r['train_seconds_loop']:.1f}s for "
            f"{r['epochs_run']} epochs of {r['train_pairs']} pairs; load before {load:.2f}, other processes "
            f"{r['other_cores']:.2f} cores"
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if args.save:
        path = record.save(
            "end_to_end", {"command": " ".join(sys.argv), "tiny": args.tiny, "goal_s": GOAL_S, "runs": results}
        )
        print(f"saved to {path}")


if __name__ == "__main__":
    main()
