"""CPU training speed: qatune's training stage (qatune.train.train on a run directory) vs the seed's recipe
(seed_recipe.seed_train: HF Trainer, pad to 256, labels on all tokens, batch 2 x 2, gradient checkpointing),
same model, same pairs, same epochs, same cores. Each side runs in its own fresh process, back to back; both
are timed over the training loop only (qatune: summary.json train_seconds; seed: trainer.train()).

    .venv/bin/python benchmarks/cpu_train.py               # default model, 48 seed pairs, 2 epochs
    .venv/bin/python benchmarks/cpu_train.py --levers      # + qatune batch sizes, packing, fp32, 1 thread
    .venv/bin/python benchmarks/cpu_train.py --tiny        # seconds-long dry run on a tiny random model
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
import workload  # noqa: E402

GOAL = 8.0
LORA = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 2e-4,
    "weight_decay": 0.01,
    "seed": 42,
}


def side_seed(args: argparse.Namespace, pairs: list[tuple[str, str]], work: Path) -> dict:
    from seed_recipe import seed_train

    out = seed_train(args.model_path, pairs, args.epochs, work / "seed")
    return {
        "examples_per_s": out["examples_per_s"],
        "seconds": out["seconds"],
        "useful_tokens_per_s": out["useful_tokens_per_s"],
        "final_loss": out["final_loss"],
        "loss_kind": "mean over all 256 positions (padding included)",
    }


def side_qatune(args: argparse.Namespace, pairs: list[tuple[str, str]], work: Path) -> dict:
    from qatune import config as cfg
    from qatune.console import is_quiet, set_quiet
    from qatune.train import train

    quiet = is_quiet()
    set_quiet(True)
    run = work / "run"
    workload.write_run_data(run, pairs, workload.validation_pairs(args.val, len(pairs)))
    train_opts = {
        **LORA,
        "epochs": [args.epochs],
        "batch_size": args.batch_size,
        "packing": args.packing or None,
        "precision": args.precision,
        "threads": args.threads,
        "early_stopping_patience": 0,
        "grounded": False,  # the same closed-book pairs on both sides
    }
    config = cfg.load(None, {"model": args.model_path, "train": train_opts})
    start = time.perf_counter()
    try:
        s = train(run, config)
    finally:
        set_quiet(quiet)
    wall = time.perf_counter() - start
    seconds = s["train_seconds"]
    return {
        "examples_per_s": s["train_examples"] / seconds,
        "seconds": seconds,
        "stage_wall_s": wall,
        "useful_tokens_per_s": s["train_tokens"] / seconds,
        "answer_tokens_per_s": s["answer_tokens"] / seconds,
        "train_examples": s["train_examples"],
        "batch_size": s.get("batch_size"),
        "packing": s.get("packing"),
        "shared_prefix_tokens": s.get("shared_prefix_tokens"),
        "precision": s.get("precision"),
        "final_loss": s.get("train_loss_by_epoch", {}).get(str(args.epochs)),
        "loss_kind": "mean over answer tokens",
        "summary_peak_memory_gib": record.gib(s["peak_memory_bytes"]),
    }


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs, _ = workload.training_pairs(args.pairs)
    with tempfile.TemporaryDirectory(prefix="qatune-bench-") as tmp:
        result = (side_seed if args.side == "seed" else side_qatune)(args, pairs, Path(tmp))
    record.emit(result)


def _child_args(args: argparse.Namespace, side: str, **over: object) -> list[str]:
    opts = {
        "side": side,
        "model-path": args.model_path,
        "pairs": args.pairs,
        "epochs": args.epochs,
        "val": args.val,
        "batch-size": args.batch_size,
        "precision": args.precision,
        "threads": args.threads,
        "packing": args.packing or None,
    }
    opts.update({k.replace("_", "-"): v for k, v in over.items()})
    return record.child_args(opts)


def _line(label: str, r: dict, ref: dict) -> str:
    ratio = r["examples_per_s"] / ref["examples_per_s"]
    return (
        f"{label:<40} {r['examples_per_s']:>7.2f} ex/s {r['seconds']:>7.1f} s "
        f"{r['useful_tokens_per_s']:>7.0f} tok/s  RSS {r['peak_rss_gib']:.2f} GiB  loss {r['final_loss']:.3f}"
        f"  x{ratio:.1f}  (other processes: {r['other_cores']:.2f} cores)"
    )


def parent(args: argparse.Namespace) -> None:
    if args.tiny:
        args.model_path = str(record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny"))
        args.pairs, args.epochs = min(args.pairs, 8), 1
    else:
        from qatune.model import resolve_model

        args.model_path = resolve_model(args.model)  # converts the default model once, outside any timing
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    load_before = os.getloadavg()
    script = Path(__file__).resolve()
    rows: dict[str, dict] = {}
    seeds, qatunes = [], []
    for i in range(args.repeats):  # alternate the sides; each side's best run counts (noise only slows)
        if not args.skip_seed:
            seeds.append(record.run_child(script, _child_args(args, "seed")))
            rows[f"seed run {i + 1}: Trainer, pad 256, all labels, 2x2, gc"] = seeds[-1]
        qatunes.append(record.run_child(script, _child_args(args, "qatune")))
        q = qatunes[-1]
        extra = ("packed, " if q["packing"] else "") + f"{q['threads']} thread(s)"
        rows[f"qatune run {i + 1}: batch {args.batch_size} = {q['batch_size']}, {q['precision']}, {extra}"] = q
    qatune = max(qatunes, key=lambda r: r["examples_per_s"])
    seed = max(seeds, key=lambda r: r["examples_per_s"]) if seeds else None
    if args.levers:
        for bs in ("2", "4", "12", "24"):
            rows[f"qatune: batch {bs}"] = record.run_child(script, _child_args(args, "qatune", batch_size=bs))
        rows["qatune: packed rows"] = record.run_child(script, _child_args(args, "qatune", packing=True))
        rows["qatune: fp32 base"] = record.run_child(script, _child_args(args, "qatune", precision="fp32"))
        rows["qatune: 1 thread"] = record.run_child(script, _child_args(args, "qatune", threads=1))
    ref = seed or qatune
    print(f"\nCPU training, {args.pairs} pairs x {args.epochs} epochs, model {args.model_path}")
    for label, r in rows.items():
        print(_line(label, r, ref))
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    ratio = qatune["examples_per_s"] / seed["examples_per_s"] if seed else None
    if ratio:
        print(
            f"best of {args.repeats}: seed {seed['examples_per_s']:.3f} ex/s, "
            f"qatune {qatune['examples_per_s']:.2f} ex/s"
        )
        print(f"qatune / seed: {ratio:.1f}x examples/s (goal >= {GOAL:.0f}x: {'met' if ratio >= GOAL else 'NOT met'})")
    if args.save:
        path = record.save(
            "cpu_train",
            {
                "command": " ".join(sys.argv),
                "tiny": args.tiny,
                "pairs": args.pairs,
                "epochs": args.epochs,
                "ratio": ratio,
                "goal": GOAL,
                "rows": rows,
                "load_before": load_before[0],
            },
        )
        print(f"saved to {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--val", type=int, default=4, help="validation pairs (evaluated between epochs, not timed)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", default="auto", help="qatune's train.batch_size")
    ap.add_argument("--precision", default="auto", help="qatune's train.precision")
    ap.add_argument("--packing", action="store_true", help="qatune's train.packing")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best of each counts")
    ap.add_argument("--levers", action="store_true")
    ap.add_argument("--skip-seed", action="store_true", help="qatune only (lever runs)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/cpu_train.json")
    ap.add_argument("--side", choices=["seed", "qatune"], help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    child(args) if args.side else parent(args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
