"""CPU evaluation speed: qatune's generation (batched greedy, chat template, KV cache, stops at end-of-turn)
vs the seed's (5-beam search, one question at a time, max_length 200 including the prompt) vs plain library
generation (side_library: batched greedy transformers `model.generate` on qatune's prompts, batch, stop tokens
and precision), same model, same questions, same cores. Each side runs in its own fresh process, back to back;
the ratios are questions/s.

    .venv/bin/python benchmarks/cpu_eval.py                 # default model, 16 held-out seed questions, 3 sides
    .venv/bin/python benchmarks/cpu_eval.py --sides library,qatune --precision fp32
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
    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import load_adapters
    from qatune.models.placement import choose_placement

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


def side_library(args: argparse.Namespace, questions: list[str]) -> dict:
    """Plain transformers + peft generation (no qatune decoding code): qatune's chat-template prompts sorted by
    length, left-padded batches of the qatune side's batch size, `model.generate` greedy (do_sample=False, one
    beam) to the same max_new_tokens, stopping at the same end-of-turn ids (eos_token_id=[...]), same precision.
    New tokens are counted as qatune counts them: up to and including the first stop token (the padding
    generate writes after a row has stopped is not counted); answers are decoded as qatune decodes them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qatune.generate import auto_batch_size
    from qatune.models.placement import choose_placement
    from qatune.prompts import messages_for, prompt_ids, stop_token_ids

    placement = choose_placement("auto", args.precision, device="cpu", cpu_bf16=True)  # as the qatune side
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=placement.dtype)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    stops = stop_token_ids(tokenizer)
    batch_size = auto_batch_size(args.batch_size, placement.device)
    gen = {
        "do_sample": False,
        "num_beams": 1,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "eos_token_id": stops,
        "pad_token_id": tokenizer.pad_token_id,
    }

    def answer(qs: list[str], max_new_tokens: int) -> list[list[int]]:
        encoded = [prompt_ids(tokenizer, messages_for(q)) for q in qs]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        new: list[list[int]] = [[] for _ in qs]
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                out = model.generate(**batch, max_new_tokens=max_new_tokens, **gen)
                for i, row in zip(idx, out[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
                    end = next((j for j, t in enumerate(row) if t in stops), None)
                    new[i] = row if end is None else row[: end + 1]
        return new

    answer(questions[:2], 8)  # warm-up, untimed
    start = time.perf_counter()
    tokens = answer(questions, args.max_new_tokens)
    seconds = time.perf_counter() - start
    stopped = [bool(t) and t[-1] in stops for t in tokens]
    texts = [
        tokenizer.decode(t[:-1] if s else t, skip_special_tokens=True).strip()
        for t, s in zip(tokens, stopped, strict=True)
    ]
    new = sum(len(t) for t in tokens)
    return {
        "questions_per_s": len(questions) / seconds,
        "seconds": seconds,
        "new_tokens": new,
        "new_tokens_per_s": new / seconds,
        "stop_rate": sum(stopped) / len(stopped),
        "answers": texts,
        "precision": placement.precision,
        "batch_size": batch_size,
    }


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
    record.emit(SIDES[args.side](args, questions))


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
        f"{label:<50} {r['questions_per_s']:>8.3f} q/s {r['seconds']:>7.1f} s {r['new_tokens']:>6} new tok "
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
        settings = {**LORA, "epochs": [epochs], "grounded": False}  # closed-book, as the benchmark asks
        train(run, cfg.load(None, {"model": model_path, "train": settings}))
    return str(best)


def _label(side: str, i: int, r: dict) -> str:
    if side == "seed":
        return f"seed run {i}: beam 5, one at a time, max_length 200"
    if side == "library":
        return f"library run {i}: generate greedy, batch {r['batch_size']}, {r['precision']}"
    return f"qatune run {i}: greedy, batch {r['batch_size']}, {r['precision']}"


def parent(args: argparse.Namespace) -> dict:
    from cpu_train import parse_sides, print_ratios, ratios

    if args.tiny:
        args.model_path = str(record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny"))
        args.questions, args.max_new_tokens = min(args.questions, 4), 16
    else:
        from qatune.models.resolve import resolve_model

        args.model_path = resolve_model(args.model)  # converts the default model once, outside any timing
    sides = parse_sides(args.sides)
    if args.adapter == "auto":
        args.adapter = trained_adapter(args.model_path, epochs=1 if args.tiny else 3)
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    load_before = os.getloadavg()
    script = Path(__file__).resolve()
    rows: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.repeats):  # alternate the sides; each side's best run counts (noise only slows)
        for side in sides:
            runs[side].append(record.run_child(script, _child_args(args, side)))
            rows[_label(side, i + 1, runs[side][-1])] = runs[side][-1]
    best = {side: max(runs[side], key=lambda r: r["questions_per_s"]) for side in sides}
    qatune = best.get("qatune")
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
        if qatune:
            for label, row in rows.items():
                if label.startswith("qatune:"):  # a speed-up must not change answers beyond what is stated
                    same = [a == b for a, b in zip(row["answers"], qatune["answers"], strict=True)]
                    row["same_answers_as_default"] = sum(same) / len(same)
                    print(f"{label}: {sum(same)}/{len(same)} answers equal to the default run's")
    if qatune:  # greedy decoding of the same prompts: the library's answers should be qatune's (fp32: all)
        for label, row in rows.items():
            if label.startswith("library run"):
                row["answers_equal_to_qatune"] = sum(
                    a == b for a, b in zip(row["answers"], qatune["answers"], strict=True)
                )
    print(
        f"\nCPU eval, {args.questions} questions, model {args.model_path}"
        f"{' + adapter ' + args.adapter if args.adapter else ' (base, no adapter)'}"
    )
    ref = best[sides[0]]
    for label, r in rows.items():
        print(_line(label, r, ref))
    for label, r in rows.items():
        if "answers_equal_to_qatune" in r:
            print(f"{label}: {r['answers_equal_to_qatune']}/{len(r['answers'])} answers equal to qatune's best run")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"best of {args.repeats}: " + ", ".join(f"{s} {best[s]['questions_per_s']:.3f} q/s" for s in sides))
    found = ratios(best, "questions_per_s")
    print_ratios(found, "questions/s", GOAL)
    result = {
        "command": " ".join(sys.argv),
        "tiny": args.tiny,
        "adapter": args.adapter,
        "questions": args.questions,
        "precision": args.precision,
        "sides": sides,
        "ratio": found.get("qatune/seed"),
        "ratio_library": found.get("qatune/library"),
        "goal": GOAL,
        "rows": rows,
        "load_before": load_before[0],
    }
    if args.save:
        compact = {k: {kk: vv for kk, vv in v.items() if kk != "answers"} for k, v in rows.items()}
        samples = {side: best[side]["answers"][:2] for side in sides}
        path = record.save("cpu_eval", {**result, "rows": compact, "sample_answers": samples})
        print(f"saved to {path}")
    return result


def main(argv: list[str] | None = None) -> dict:
    from cpu_train import SIDE_ORDER

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument(
        "--adapter",
        default=None,
        help="a LoRA adapter folder used by every side; 'auto': train one with qatune first (untimed)",
    )
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--batch-size", default="auto", help="qatune's eval.batch_size (the library side uses it too)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="answer cap (the eval default was 256)")
    ap.add_argument("--seed-max-length", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sides", default=None, help="comma-separated, of seed,library,qatune (default: all three)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best of each counts")
    ap.add_argument("--levers", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/cpu_eval.json")
    ap.add_argument("--side", choices=list(SIDE_ORDER), help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help="qatune's train.precision (the eval uses it too)")
    ap.add_argument("--without", choices=["lookup", "prefill-index"], help=argparse.SUPPRESS)
    ap.add_argument("--draft-rows", type=int, default=None, help=argparse.SUPPRESS)
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
