"""CPU evaluation speed: qatune's generation (batched greedy, chat template, KV cache, stops at end-of-turn)
vs the seed's (5-beam search, one question at a time, max_length 200 including the prompt), same model, same
questions, same cores. Each side runs in its own fresh process, back to back; the ratio is questions/s.

    .venv/bin/python benchmarks/cpu_eval.py                 # default model, 16 held-out seed questions
    .venv/bin/python benchmarks/cpu_eval.py --levers        # + qatune batch sizes, bf16, 1 thread
    .venv/bin/python benchmarks/cpu_eval.py --adapter auto  # a qatune-trained adapter on both sides
    .venv/bin/python benchmarks/cpu_eval.py --tiny          # seconds-long dry run on a tiny random model
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

GOAL = 30.0


def _load(model_path: str, adapter: str | None, precision: str):
    from qatune.model import choose_placement, load_adapters, load_base, load_tokenizer

    placement = choose_placement("auto", precision, device="cpu", cpu_bf16=True)  # as qatune's load_engine
    model = load_base(model_path, placement)
    if adapter:
        model = load_adapters(model, {"ft": Path(adapter)})
    return model, load_tokenizer(model_path), placement


def side_seed(args: argparse.Namespace, questions: list[str]) -> dict:
    from seed_recipe import seed_generate

    model, tokenizer, _ = _load(args.model_path, args.adapter, "fp32")
    prompt = len(tokenizer(f"<s>[INST] {questions[0]} [/INST]")["input_ids"])
    seed_generate(model, tokenizer, questions[:1], max_length=prompt + 8)  # warm-up, untimed
    out = seed_generate(model, tokenizer, questions, max_length=args.seed_max_length)
    return {
        "questions_per_s": out["questions_per_s"],
        "seconds": out["seconds"],
        "new_tokens": out["new_tokens"],
        "new_tokens_per_s": out["new_tokens"] / out["seconds"],
        "answers": out["answers"],
    }


def _switch_off(lever: str) -> None:
    """Undo one of qatune's decoding levers, to measure what it buys."""
    import functools

    from qatune.generate import decoding, engine

    if lever == "lookup":  # the lone row decodes one token per pass
        engine.greedy_decode = functools.partial(decoding.greedy_decode, lookup=False)
    elif lever == "prefill-index":  # the prompt pass slices its last position (a strided view)
        decoding.prompt_logits_index = lambda input_ids: 1


def side_qatune(args: argparse.Namespace, questions: list[str]) -> dict:
    from qatune.generate import BASE, Engine, auto_batch_size
    from qatune.prompts import messages_for

    if args.without:
        _switch_off(args.without)
    if args.draft_rows:
        from qatune.generate import decoding

        decoding.DRAFT_ROWS = args.draft_rows

    model, tokenizer, placement = _load(args.model_path, args.adapter, args.precision)
    engine = Engine(model, tokenizer, ["ft"] if args.adapter else [], placement.device)
    batch_size = auto_batch_size(args.batch_size, placement.device)
    name = "ft" if args.adapter else BASE
    convs = [messages_for(q) for q in questions]
    engine.generate(name, convs[:2], max_new_tokens=8, batch_size=2)  # warm-up, untimed
    start = time.perf_counter()
    gens = engine.generate(name, convs, max_new_tokens=args.max_new_tokens, batch_size=batch_size)
    seconds = time.perf_counter() - start
    new = sum(g.new_tokens for g in gens)
    return {
        "questions_per_s": len(questions) / seconds,
        "seconds": seconds,
        "new_tokens": new,
        "new_tokens_per_s": new / seconds,
        "stop_rate": sum(g.stopped for g in gens) / len(gens),
        "answers": [g.text for g in gens],
        "precision": placement.precision,
        "batch_size": batch_size,
    }


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs, _ = workload.eval_questions(args.questions)
    questions = [q for q, _ in pairs]
    result = side_seed(args, questions) if args.side == "seed" else side_qatune(args, questions)
    record.emit(result)


def _child_args(args: argparse.Namespace, side: str, **over: object) -> list[str]:
    opts = {
        "side": side,
        "model-path": args.model_path,
        "questions": args.questions,
        "batch-size": args.batch_size,
        "max-new-tokens": args.max_new_tokens,
        "precision": args.precision,
        "seed-max-length": args.seed_max_length,
        "adapter": args.adapter,
        "threads": args.threads,
        "without": None,
        "draft-rows": None,
    }
    opts.update({k.replace("_", "-"): v for k, v in over.items()})
    return record.child_args(opts)


def _line(label: str, r: dict, ref: dict) -> str:
    ratio = r["questions_per_s"] / ref["questions_per_s"]
    return (
        f"{label:<44} {r['questions_per_s']:>8.3f} q/s {r['seconds']:>7.1f} s {r['new_tokens']:>6} new tok "
        f"{r['new_tokens_per_s']:>7.1f} tok/s  RSS {r['peak_rss_gib']:.2f} GiB  x{ratio:.1f}"
        f"  (other processes: {r['other_cores']:.2f} cores)"
    )


def trained_adapter(model_path: str, epochs: int = 3) -> str:
    """A LoRA adapter from qatune's own training stage on the benchmark's 48 training pairs (made once, cached
    under the temp dir; not timed). It has learned to end its answers, as every fine-tuned model in a run has."""
    from cpu_train import LORA

    from qatune import config as cfg
    from qatune.train import train

    run = Path(tempfile.gettempdir()) / "qatune-bench-adapter" / Path(model_path).name
    best = run / "models" / "best"
    if not (best / "adapter_model.safetensors").exists():
        pairs, _ = workload.training_pairs(48)
        workload.write_run_data(run, pairs, workload.validation_pairs(4, len(pairs)))
        train(run, cfg.load(None, {"model": model_path, "train": {**LORA, "epochs": [epochs]}}))
    return str(best)


def parent(args: argparse.Namespace) -> None:
    if args.tiny:
        args.model_path = str(record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny"))
        args.questions, args.max_new_tokens = min(args.questions, 4), 16
    else:
        from qatune.model import resolve_model

        args.model_path = resolve_model(args.model)  # converts the default model once, outside any timing
    if args.adapter == "auto":
        args.adapter = trained_adapter(args.model_path, epochs=1 if args.tiny else 3)
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    load_before = os.getloadavg()
    script = Path(__file__).resolve()
    rows: dict[str, dict] = {}
    seeds, qatunes = [], []
    for i in range(args.repeats):  # alternate the sides; each side's best run counts (noise only slows)
        seeds.append(record.run_child(script, _child_args(args, "seed")))
        rows[f"seed run {i + 1}: beam 5, one at a time, max_length 200"] = seeds[-1]
        qatunes.append(record.run_child(script, _child_args(args, "qatune")))
        q = qatunes[-1]
        rows[f"qatune run {i + 1}: greedy, batch {q['batch_size']}, {q['precision']}"] = q
    seed = max(seeds, key=lambda r: r["questions_per_s"])
    qatune = max(qatunes, key=lambda r: r["questions_per_s"])
    if args.levers:
        for bs in (4, 8, 16):
            rows[f"qatune: batch {bs}"] = record.run_child(script, _child_args(args, "qatune", batch_size=bs))
        for cap in (64, 96, 128):
            over = {"max_new_tokens": cap}
            rows[f"qatune: max_new_tokens {cap}"] = record.run_child(script, _child_args(args, "qatune", **over))
        for lever in ("lookup", "prefill-index"):
            rows[f"qatune: without {lever}"] = record.run_child(script, _child_args(args, "qatune", without=lever))
        for n in (1, 8, 16):
            rows[f"qatune: drafting from {n} rows"] = record.run_child(
                script, _child_args(args, "qatune", draft_rows=n)
            )
        rows["qatune: fp32 weights"] = record.run_child(script, _child_args(args, "qatune", precision="fp32"))
        rows["qatune: 1 thread"] = record.run_child(script, _child_args(args, "qatune", threads=1))
        for label, row in rows.items():
            if label.startswith("qatune:"):  # a speed-up must not change answers beyond what is stated
                same = [a == b for a, b in zip(row["answers"], qatune["answers"], strict=True)]
                row["same_answers_as_default"] = sum(same) / len(same)
                print(f"{label}: {sum(same)}/{len(same)} answers equal to the default run's")
    ratio = qatune["questions_per_s"] / seed["questions_per_s"]
    print(
        f"\nCPU eval, {args.questions} questions, model {args.model_path}"
        f"{' + adapter ' + args.adapter if args.adapter else ' (base, no adapter)'}"
    )
    for label, r in rows.items():
        print(_line(label, r, seed))
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"best of {args.repeats}: seed {seed['questions_per_s']:.3f} q/s, qatune {qatune['questions_per_s']:.3f} q/s")
    print(f"qatune / seed: {ratio:.1f}x questions/s (goal >= {GOAL:.0f}x: {'met' if ratio >= GOAL else 'NOT met'})")
    if args.save:
        compact = {k: {kk: vv for kk, vv in v.items() if kk != "answers"} for k, v in rows.items()}
        path = record.save(
            "cpu_eval",
            {
                "command": " ".join(sys.argv),
                "tiny": args.tiny,
                "adapter": args.adapter,
                "questions": args.questions,
                "ratio": ratio,
                "goal": GOAL,
                "rows": compact,
                "load_before": load_before[0],
                "sample_answers": {"seed": seed["answers"][:2], "qatune": qatune["answers"][:2]},
            },
        )
        print(f"saved to {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument(
        "--adapter",
        default=None,
        help="a LoRA adapter folder used by both sides; 'auto': train one with qatune first (untimed)",
    )
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--batch-size", default="auto", help="qatune's eval.batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="qatune's eval.max_new_tokens default")
    ap.add_argument("--seed-max-length", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best of each counts")
    ap.add_argument("--levers", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/cpu_eval.json")
    ap.add_argument("--side", choices=["seed", "qatune"], help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help="qatune's train.precision (the eval uses it too)")
    ap.add_argument("--without", choices=["lookup", "prefill-index"], help=argparse.SUPPRESS)
    ap.add_argument("--draft-rows", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    child(args) if args.side else parent(args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
