"""Time to quality: how long `qatune run` (the example data, its 37 held-out reworded test questions) takes until a
fine-tuned closed-book model scores ROUGE-L >= 0.45, for the default recipe and for the seed's settings.

Closed-book models are `epoch-N` and `best` (not grounded, not base, not the retrieval baseline); `best` is a copy of
one epoch, written with it, so the epochs decide. Per model, the test ROUGE-L mean [95% CI] is read from
RUN/eval/test/scores.json.

A model *reaches* the target when it exists and is measured:
    time to target = (time its checkpoint RUN/models/epoch-N/adapter_model.safetensors was written, from the start
                      of `qatune run`) + (its share of the eval stage)
for the first saved epoch whose test ROUGE-L mean is >= the target. Its share of the eval stage is an estimate:
the eval stage's seconds / the number of models it generated answers for (base, each distinct adapter, the
grounded models; not the retrieval baseline, not `best`, whose answers are copied from its epoch). Checkpoint times
are file modification times compared with the Unix time recorded just before `qatune run` started. In a real run
the eval stage starts only after training ends, so the full run's wall time is also given: it is when a user
sees the scores.

    .venv/bin/python benchmarks/time_to_quality.py --save                    # default and seed recipes, fp32
    .venv/bin/python benchmarks/time_to_quality.py --precision auto --recipes default
    .venv/bin/python benchmarks/time_to_quality.py --from-run RUN [--log RUN.log]   # re-analyse a finished run
    .venv/bin/python benchmarks/time_to_quality.py --tiny                    # dry run: tiny random model

--from-run reads a finished run directory (any recipe; its config names it). Its start is not on disk: it is
taken as the end of prepare (RUN/config.yaml's time) minus prepare's seconds from --log (the run's printed
output) when given, so it leaves out start-up before prepare (imports, model check, a few seconds); stage seconds
come from --log, else from file times (train: config.yaml -> train/summary.json, eval: -> eval/test/scores.json,
report: -> report/report.html).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
import timed_run  # noqa: E402

TARGET = 0.45
SEED_FLAGS = "--lora-r 8 --lora-alpha 16 --lora-dropout 0.1 --target-modules q_proj,v_proj --lr 2e-4"
RECIPES = {
    "default": [],
    "seed": [*SEED_FLAGS.split(), "--epochs", "3,4,6,8", "--augment", "0", "--no-grounded"],
}


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def recipe_of(run: Path) -> str:
    """`default`, `seed` or `custom`, from the run's saved config."""
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    train, prep = config["train"], config["prepare"]
    if train["target_modules"] == ["q_proj", "v_proj"] and train["lora_r"] == 8 and not prep["augment"]:
        return "seed" if not train["grounded"] else "custom"
    from qatune.config import PrepareConfig, TrainConfig

    defaults = TrainConfig().model_dump(include={"lora_r", "target_modules", "grounded", "epochs", "lr"})
    same = all(train.get(k) == v for k, v in defaults.items()) and prep["augment"] == PrepareConfig().augment
    return "default" if same else "custom"


def file_stages(run: Path) -> dict[str, float]:
    """Stage seconds from the files each stage writes last (prepare cannot be told from files)."""
    prepared = _mtime(run / "config.yaml")
    trained = _mtime(run / "train" / "summary.json")
    scored = _mtime(run / "eval" / "test" / "scores.json")
    stages = {"train": trained - prepared, "eval:test": scored - trained}
    report = run / "report" / "report.html"
    if report.exists():
        stages["report"] = _mtime(report) - scored
    return {k: round(v, 1) for k, v in stages.items()}


def analyse(run: Path, start: float, stages: dict[str, float], target: float = TARGET) -> dict:
    """Per closed-book model: test ROUGE-L, when its checkpoint was written and when it was measured; the
    first that reaches `target`, and the best. `start` is the Unix time `qatune run` started."""
    scores = json.loads((run / "eval" / "test" / "scores.json").read_text())
    summary = json.loads((run / "train" / "summary.json").read_text())
    generated = timed_run.generating_models(run)
    eval_s = stages.get("eval:test") or file_stages(run)["eval:test"]
    share = eval_s / max(len(generated), 1)
    models = []
    for epoch in summary["epochs"]:
        name = f"epoch-{epoch}"
        rouge = scores["models"][name]["rougeL"]
        saved = _mtime(run / "models" / name / "adapter_model.safetensors") - start
        models.append(
            {
                "model": name,
                "rougeL": round(rouge["mean"], 4),
                "ci95": [round(x, 4) for x in rouge["ci95"]],
                "saved_at_s": round(saved, 1),
                "measured_at_s": round(saved + share, 1),
            }
        )
    models.sort(key=lambda m: m["saved_at_s"])
    first = next((m for m in models if m["rougeL"] >= target), None)
    top = max(models, key=lambda m: m["rougeL"]) if models else None
    best = scores["models"]["best"]["rougeL"]
    return {
        "run": str(run),
        "recipe": recipe_of(run),
        "epochs": summary["epochs"],
        "precision": summary.get("precision"),
        "test_questions": scores["n"],
        "target": target,
        "models": models,
        "reached": first is not None,
        "time_to_target_s": first["measured_at_s"] if first else None,
        "first_model": first["model"] if first else None,
        "checkpoint_at_s": first["saved_at_s"] if first else None,
        "eval_share_s": round(share, 1),
        "eval_generating_models": generated,
        "best": {
            "epoch": summary["best_epoch"],
            "rougeL": round(best["mean"], 4),
            "ci95": [round(x, 4) for x in best["ci95"]],
        },
        "top_closed_book": top,
        "stages_s": stages,
        "train_loop_s": summary["train_seconds"],
        "train_validation_s": summary.get("eval_seconds"),
    }


def from_run(run: Path, log: Path | None) -> dict:
    output = log.read_text(errors="replace") if log else ""
    stages = timed_run.stage_seconds(output) or file_stages(run)
    start = _mtime(run / "config.yaml") - stages.get("prepare", 0.0)
    result = analyse(run, start, stages)
    result["start"] = "end of prepare minus prepare seconds (--log)" if "prepare" in stages else "end of prepare"
    report = run / "report" / "report.html"
    result["wall_s"] = round(_mtime(report) - start, 1) if report.exists() else None
    return result


def live(recipe: str, root: Path, precision: str, tiny: Path | None) -> dict:
    """`qatune run [recipe flags] --precision P` in a fresh working directory (runs/example), then analyse it."""
    flags = [*RECIPES[recipe], "--precision", precision]
    if tiny is not None:  # dry run: a tiny random model, one epoch, short answers
        if "--epochs" in flags:
            at = flags.index("--epochs")
            del flags[at : at + 2]
        flags += ["--model", str(tiny), "--epochs", "1", "--max-new-tokens", "8"]
    work = root / recipe
    r = timed_run.qatune_run(["run", *flags], work)
    result = analyse(work / "runs" / "example", r["started_at"], r["stages_s"])
    result.update(
        recipe=recipe,
        command=r["command"],
        start="Unix time before the process started",
        wall_s=r["wall_s"],
        other_cores=r["other_cores"],
        outside_stages_s=round(r["wall_s"] - sum(r["stages_s"].values()), 1),
    )
    return result


def _fmt(r: dict) -> str:
    return f"{r['rougeL']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def print_result(r: dict) -> None:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages_s"].items())
    wall = f"{r['wall_s']:.1f} s" if r.get("wall_s") is not None else "?"
    if r["start"].startswith("end of prepare"):
        wall += f" (from {r['start']})"
    print(f"\n{r['recipe']} recipe (epochs {','.join(map(str, r['epochs']))}; {r['precision']}): wall {wall}; {stages}")
    print(f"  {'model':<10} {'ROUGE-L [95% CI]':<20} {'checkpoint':>11} {'+ eval share':>13} {'= measured':>11}")
    for m in r["models"]:
        mark = f"  >= {r['target']}" if m["rougeL"] >= r["target"] else ""
        print(
            f"  {m['model']:<10} {_fmt(m):<20} {m['saved_at_s']:>9.1f} s {r['eval_share_s']:>11.1f} s "
            f"{m['measured_at_s']:>9.1f} s{mark}"
        )
    print(f"  best       = epoch-{r['best']['epoch']}")
    n = len(r["eval_generating_models"])
    if r["reached"]:
        print(
            f"  time to ROUGE-L {r['target']}: {r['time_to_target_s']:.1f} s ({r['first_model']}: checkpoint at "
            f"{r['checkpoint_at_s']:.1f} s + eval share {r['eval_share_s']:.1f} s = eval / {n} generating models)"
        )
    else:
        top = r["top_closed_book"]
        best = f"{top['model']} {_fmt(top)}" if top else "no model"
        print(f"  time to ROUGE-L {r['target']}: not reached (best closed-book: {best})")


def print_table(results: list[dict]) -> None:
    target = results[0]["target"] if results else TARGET
    print(
        f"\n| recipe | ROUGE-L per saved epoch [95% CI] | time to ROUGE-L {target} | best closed-book | wall | stages |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        per_epoch = "; ".join(f"{m['model']} {_fmt(m)}" for m in r["models"])
        reached = f"{r['time_to_target_s']:.0f} s ({r['first_model']})" if r["reached"] else "not reached"
        top = r["top_closed_book"]
        best = f"{top['model']} {_fmt(top)}" if top else "-"
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "?"
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in r["stages_s"].items())
        print(f"| {r['recipe']} ({r['precision']}) | {per_epoch} | {reached} | {best} | {wall} | {stages} |")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="default,seed", help="comma-separated: default, seed")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"])
    ap.add_argument("--from-run", type=Path, action="append", default=[], help="analyse a finished run instead")
    ap.add_argument("--log", type=Path, action="append", default=[], help="that run's printed output (in order)")
    ap.add_argument("--tiny", action="store_true", help="dry run on a tiny random model (cannot reach 0.45)")
    ap.add_argument("--keep", default=None, help="keep the run folders under this directory")
    ap.add_argument("--save", action="store_true", help="append to benchmarks/results/time_to_quality.json")
    args = ap.parse_args(argv)
    if args.from_run:
        logs = args.log + [None] * (len(args.from_run) - len(args.log))
        results = [from_run(run, log) for run, log in zip(args.from_run, logs, strict=True)]
    else:
        recipes = [r for r in args.recipes.split(",") if r]
        unknown = [r for r in recipes if r not in RECIPES]
        if unknown:
            ap.error(f"unknown recipe(s) {unknown}; choose from {list(RECIPES)}")
        tiny = record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny") if args.tiny else None
        root = Path(args.keep or tempfile.mkdtemp(prefix="qatune-ttq-"))
        results = [live(recipe, root, args.precision, tiny) for recipe in recipes]
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for r in results:
        print_result(r)
    print_table(results)
    if args.save:
        path = record.save(
            "time_to_quality",
            {"command": " ".join(sys.argv), "tiny": args.tiny, "target": TARGET, "results": results},
        )
        print(f"saved to {path}")
    return results


if __name__ == "__main__":
    main()
