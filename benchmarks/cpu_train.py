"""CPU training speed: qatune's training stage (qatune.train.train on a run directory) vs the seed's recipe
(seed_recipe.seed_train: HF Trainer, pad to 256, labels on all tokens, batch 2 x 2, gradient checkpointing)
vs a well-configured plain library setup (side_library: HF Trainer on qatune's chat-template tokens with
answer-only labels, length-grouped dynamic padding, qatune's batch and precision, no checkpointing), same
model, same pairs, same epochs, same LoRA, same cores. Each side runs in its own fresh process, back to back;
all are timed over the training loop only (qatune: summary.json train_seconds; seed, library: trainer.train()).

    .venv/bin/python benchmarks/cpu_train.py               # default model, 48 seed pairs, 2 epochs, 3 sides
    .venv/bin/python benchmarks/cpu_train.py --sides library,qatune --precision fp32
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


def library_examples(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    """qatune's own tokens for each pair (chat template, answer-only labels: -100 on the prompt), as the
    qatune side's training stage encodes them (same max_length; pairs whose prompt does not fit are skipped)."""
    from qatune.config import TrainConfig
    from qatune.prompts import encode_pair

    length = TrainConfig().max_length
    length = length if isinstance(length, int) else 1 << 30  # auto: the longest pair, so nothing is cut
    rows = []
    for q, a in pairs:
        enc = encode_pair(tokenizer, q, a, length)
        if enc is not None and enc.answer_tokens:
            rows.append({"input_ids": enc.input_ids, "attention_mask": [1] * len(enc.input_ids), "labels": enc.labels})
    return rows


def library_batch_size(args: argparse.Namespace, lengths: list[int]) -> int:
    """--library-batch-size, or by default what the qatune side's batch resolves to: its --batch-size when a
    number, else qatune's auto rule (a CPU token budget, >= 8 steps per epoch) on the same token lengths."""
    if args.library_batch_size != "auto":
        return int(args.library_batch_size)
    if isinstance(args.batch_size, int):
        return args.batch_size
    from qatune.train.batching import auto_batch_size
    from qatune.train.setup import CPU_TOKEN_BUDGET

    return auto_batch_size(lengths, CPU_TOKEN_BUDGET)


def side_library(args: argparse.Namespace, pairs: list[tuple[str, str]], work: Path) -> dict:
    """A well-configured plain transformers + peft training (no qatune training code): HF Trainer on qatune's
    tokens, DataCollatorForSeq2Seq padding each batch to its longest row (labels padded with -100),
    train_sampling_strategy="group_by_length" (v5's group_by_length=True), no gradient checkpointing, bf16 base
    weights + bf16 autocast where qatune picks bf16 (precision auto on a CPU with native bf16), else fp32; the
    qatune side's LoRA, lr, weight decay, seed, 5 warm-up steps then a constant rate, gradient clipping 1.0."""
    import math

    import torch
    from accelerate.state import AcceleratorState
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from qatune.config import TrainConfig
    from qatune.models.placement import choose_placement

    defaults = TrainConfig()
    placement = choose_placement("auto", args.precision, device="cpu", cpu_bf16=True)  # qatune's precision rule
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "right"
    rows = library_examples(tokenizer, pairs)
    lengths = [len(r["input_ids"]) for r in rows]
    batch_size = library_batch_size(args, lengths)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=placement.dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    set_seed(LORA["seed"])  # LoRA initialisation from the seed, as qatune
    lora = LoraConfig(
        r=LORA["lora_r"],
        lora_alpha=LORA["lora_alpha"],
        lora_dropout=LORA["lora_dropout"],
        target_modules=LORA["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)  # LoRA weights in fp32 over a bf16 base (peft's adapter autocast)
    targs = TrainingArguments(
        output_dir=str(work / "library"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=args.epochs,
        learning_rate=LORA["lr"],
        weight_decay=LORA["weight_decay"],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=defaults.warmup_steps,
        max_grad_norm=defaults.max_grad_norm,
        train_sampling_strategy="group_by_length",
        activation_checkpointing=False,  # v5's name for gradient_checkpointing
        bf16=placement.precision == "bf16",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=LORA["seed"],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
    )
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    class _Trainer(Trainer):
        """Keeps each step's loss (the mean over its answer tokens) with its answer-token count."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs["labels"][..., 1:].ne(-100).sum()
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            steps.append(((out[0] if return_outputs else out).detach().float() * n, n))
            return out

    # accelerate keeps one process-wide precision; an in-process caller (the smoke test) may have set another
    AcceleratorState._reset_state(reset_partial_state=False)
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    trainer = _Trainer(model=model, args=targs, train_dataset=rows, data_collator=collator, processing_class=tokenizer)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    last = steps[-math.ceil(len(rows) / batch_size) :]  # the final epoch's steps
    examples = len(rows) * args.epochs
    tokens = sum(lengths) * args.epochs
    answer = sum(sum(1 for t in r["labels"] if t != -100) for r in rows) * args.epochs
    return {
        "examples_per_s": examples / seconds,
        "seconds": seconds,
        "useful_tokens_per_s": tokens / seconds,
        "answer_tokens_per_s": answer / seconds,
        "train_examples": examples,
        "train_tokens": tokens,
        "answer_tokens": answer,
        "steps": len(steps),
        "batch_size": batch_size,
        "precision": placement.precision,
        "final_loss": float(sum(s for s, _ in last) / sum(n for _, n in last)),
        "loss_kind": "mean over answer tokens",
        "trainer_mean_loss": result.training_loss,
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
    seconds = s.train_seconds
    return {
        "examples_per_s": s.train_examples / seconds,
        "seconds": seconds,
        "stage_wall_s": wall,
        "useful_tokens_per_s": s.train_tokens / seconds,
        "answer_tokens_per_s": s.answer_tokens / seconds,
        "train_examples": s.train_examples,
        "train_tokens": s.train_tokens,
        "answer_tokens": s.answer_tokens,
        "steps": s.steps,
        "batch_size": s.batch_size,
        "packing": s.packing,
        "shared_prefix_tokens": s.shared_prefix_tokens,
        "precision": s.precision,
        "final_loss": s.train_loss_by_epoch.get(str(args.epochs)),
        "loss_kind": "mean over answer tokens",
        "summary_peak_memory_gib": record.gib(s.peak_memory_bytes),
    }


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs, _ = workload.training_pairs(args.pairs)
    with tempfile.TemporaryDirectory(prefix="qatune-bench-") as tmp:
        result = SIDES[args.side](args, pairs, Path(tmp))
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
        "library-batch-size": args.library_batch_size,
    }
    opts.update({k.replace("_", "-"): v for k, v in over.items()})
    return record.child_args(opts)


def _line(label: str, r: dict, ref: dict) -> str:
    ratio = r["examples_per_s"] / ref["examples_per_s"]
    return (
        f"{label:<56} {r['examples_per_s']:>7.2f} ex/s {r['seconds']:>7.1f} s "
        f"{r['useful_tokens_per_s']:>7.0f} tok/s  RSS {r['peak_rss_gib']:.2f} GiB  loss {r['final_loss']:.3f}"
        f"  x{ratio:.1f}  (other processes: {r['other_cores']:.2f} cores)"
    )


SIDE_ORDER = ("seed", "library", "qatune")


def parse_sides(value: str | None, skip_seed: bool = False) -> list[str]:
    """--sides as a list in the fixed run order seed, library, qatune. --skip-seed alone keeps its old
    meaning, qatune only (the lever runs); with --sides it drops the seed from them."""
    if value is None:
        value = "qatune" if skip_seed else ",".join(SIDE_ORDER)
    wanted = {s.strip() for s in value.split(",") if s.strip()}
    unknown = wanted - set(SIDE_ORDER)
    if unknown:
        raise SystemExit(f"--sides: unknown side {sorted(unknown)[0]!r}; choose from {', '.join(SIDE_ORDER)}")
    sides = [s for s in SIDE_ORDER if s in wanted and not (skip_seed and s == "seed")]
    if not sides:
        raise SystemExit("--sides: nothing to run")
    return sides


def ratios(best: dict[str, dict | None], key: str) -> dict[str, float]:
    """qatune / seed and qatune / library of `key` (the best run of each side), for the sides that ran."""
    q = best.get("qatune")
    return {f"qatune/{side}": q[key] / best[side][key] for side in ("seed", "library") if q and best.get(side)}


def print_ratios(found: dict[str, float], unit: str, goal: float) -> None:
    for name, value in found.items():
        verdict = f" (goal >= {goal:.0f}x: {'met' if value >= goal else 'NOT met'})" if name == "qatune/seed" else ""
        print(f"{name}: {value:.2f}x {unit}{verdict}")


def _label(side: str, i: int, r: dict, args: argparse.Namespace) -> str:
    if side == "seed":
        return f"seed run {i}: Trainer, pad 256, all labels, 2x2, gc"
    if side == "library":
        return f"library run {i}: Trainer, grouped, dyn pad, batch {r['batch_size']}, {r['precision']}"
    extra = ("packed, " if r["packing"] else "") + f"{r['threads']} thread(s)"
    return f"qatune run {i}: batch {args.batch_size} = {r['batch_size']}, {r['precision']}, {extra}"


def parent(args: argparse.Namespace) -> dict:
    if args.tiny:
        args.model_path = str(record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny"))
        args.pairs, args.epochs = min(args.pairs, 8), 1
    else:
        from qatune.models.resolve import resolve_model

        args.model_path = resolve_model(args.model)  # converts the default model once, outside any timing
    sides = parse_sides(args.sides, args.skip_seed)
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    load_before = os.getloadavg()
    script = Path(__file__).resolve()
    rows: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.repeats):  # alternate the sides; each side's best run counts (noise only slows)
        for side in sides:
            runs[side].append(record.run_child(script, _child_args(args, side)))
            rows[_label(side, i + 1, runs[side][-1], args)] = runs[side][-1]
    best = {side: max(runs[side], key=lambda r: r["examples_per_s"]) for side in sides}
    if args.levers:
        for bs in ("2", "4", "12", "24"):
            rows[f"qatune: batch {bs}"] = record.run_child(script, _child_args(args, "qatune", batch_size=bs))
        rows["qatune: packed rows"] = record.run_child(script, _child_args(args, "qatune", packing=True))
        rows["qatune: fp32 base"] = record.run_child(script, _child_args(args, "qatune", precision="fp32"))
        rows["qatune: 1 thread"] = record.run_child(script, _child_args(args, "qatune", threads=1))
    ref = best[sides[0]]
    print(f"\nCPU training, {args.pairs} pairs x {args.epochs} epochs, model {args.model_path}")
    for label, r in rows.items():
        print(_line(label, r, ref))
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    lib, q = best.get("library"), best.get("qatune")
    if lib and q and lib["batch_size"] != q["batch_size"]:
        print(f"note: library batch {lib['batch_size']} differs from qatune's {q['batch_size']} (--library-batch-size)")
    found = ratios(best, "examples_per_s")
    if found:
        print(f"best of {args.repeats}: " + ", ".join(f"{s} {best[s]['examples_per_s']:.3f} ex/s" for s in sides))
    print_ratios(found, "examples/s", GOAL)
    result = {
        "command": " ".join(sys.argv),
        "tiny": args.tiny,
        "pairs": args.pairs,
        "epochs": args.epochs,
        "precision": args.precision,
        "sides": sides,
        "ratio": found.get("qatune/seed"),
        "ratio_library": found.get("qatune/library"),
        "goal": GOAL,
        "rows": rows,
        "load_before": load_before[0],
    }
    if args.save:
        print(f"saved to {record.save('cpu_train', result)}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--val", type=int, default=4, help="validation pairs (evaluated between epochs, not timed)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", default="auto", help="qatune's train.batch_size")
    ap.add_argument(
        "--library-batch-size",
        default="auto",
        help="the library side's batch; auto: what the qatune side's batch resolves to (same rule, same tokens)",
    )
    ap.add_argument("--precision", default="auto", help="qatune's train.precision (the library side follows it)")
    ap.add_argument("--packing", action="store_true", help="qatune's train.packing")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sides", default=None, help="comma-separated, of seed,library,qatune (default: all three)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best of each counts")
    ap.add_argument("--levers", action="store_true")
    ap.add_argument(
        "--skip-seed", action="store_true", help="qatune only (lever runs); with --sides: leave the seed out of them"
    )
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/cpu_train.json")
    ap.add_argument("--side", choices=list(SIDE_ORDER), help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    if args.side:
        child(args)
        return {}
    return parent(args)


SIDES = {"seed": side_seed, "library": side_library, "qatune": side_qatune}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
