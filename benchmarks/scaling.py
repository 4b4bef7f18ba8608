"""Scaling: how `qatune run` time grows with the number of pairs and the length of the answers.

Data (benchmarks/synthetic_qa.py): a fictional course catalogue's FAQ, every pair with its own facts (codes,
names, rooms, dates, numbers); short answers 12-19 words, long answers 60-100. Each point writes DATA as CSV
(question,answer) and a fixed TEST file: 20 reworded questions about facts among the first pairs, the same file
for every size of one answer length. Deterministic (--seed).

Bounded configuration, one run directory per point, as a user types it:
    qatune run DATA --test TEST --out RUN --epochs 1 --precision fp32
Everything else is at its default: 2 rewordings per question, grounded examples (so 4 training examples per
pair and epoch), 32 recall questions answered after the epoch, eval of base, retrieval, epoch-1 (= best),
grounded base and best on the 20 test questions with up to 256 new tokens. Recorded per point: the stage seconds
the run printed (prepare with augmentation; train; eval; report) and, from train/summary.json, the training
loop, the in-training validation (recall loss and greedy recall answers) and the rest of the train stage
(model load, MiniLM index of the training pairs, grounded examples, tokenizing, saving); training examples and
tokens per epoch; new tokens generated in eval. With long answers, grounded prompts that would pass
max_length 512 (two retrieved long pairs in the prompt, then the answer) keep fewer retrieved pairs.

The growth summary fits seconds = a + b x pairs per stage and answer length (least squares) and extrapolates a
default run on your own data without --test (sweep 2,3 = one pass of 3 epochs, 10% of pairs held out as the
unseen set): prepare and train set-up as fitted, training loop x 3 epochs x 0.9, validation x 2 (recall is
answered at epochs 2 and 3), eval per question and generating model x (50 generated test questions + 10% of
pairs) x 5 models (base, epoch-2, epoch-3, grounded base and best). The extrapolation is a rough guide.

    .venv/bin/python benchmarks/scaling.py --save                           # default points, ~25 min on 2 fp32 cores
    .venv/bin/python benchmarks/scaling.py --pairs 100,300,1000 --answers short,long --estimate-only
    .venv/bin/python benchmarks/scaling.py --pairs 100 --answers short
    .venv/bin/python benchmarks/scaling.py --tiny                           # dry run: tiny random model
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
import synthetic_qa  # noqa: E402
import timed_run  # noqa: E402

DEFAULT_POINTS = "100:short,300:short,50:long,100:long"
TINY_POINTS = "12:short,24:short,12:long"
STAGES = ("prepare", "train_setup", "train_loop", "train_validation", "eval", "report", "outside")
# For the estimate printed before starting (2 fp32 cores, quiet; bf16 about 0.55x). The loop: 3.2 s per 1,000
# training tokens, as in a quiet default `qatune run` (314 tokens/s). The rest of a point (prepare, set-up,
# validation, eval of 20 questions, report): rough, from a 100-pair run of this script on a busy machine.
LOOP_S_PER_KTOKEN = 3.2
FIXED_S = {"short": 80.0, "long": 150.0}
WORD_TOKENS = 1.55  # SmolLM2 tokens per word of this data
PROMPT_TOKENS = 40  # chat template and default system prompt around one question
CONTEXT_TOKENS = 15  # formatting around each retrieved pair in a grounded prompt


def parse_points(text: str) -> list[tuple[int, str]]:
    points = []
    for item in text.split(","):
        n, _, answers = item.partition(":")
        if answers not in ("short", "long") or not n.isdigit() or int(n) < 2:
            raise SystemExit(f"bad point {item!r}: expected PAIRS:short or PAIRS:long, e.g. 100:short")
        points.append((int(n), answers))
    return points


def estimate_s(n: int, answers: str, epochs: int, precision: str) -> float:
    """Seconds one point should take (fp32 constants above; bf16 about 0.55x)."""
    rows = synthetic_qa.pairs(n, answers)
    qa = sum(len(r["question"].split()) + len(r["answer"].split()) for r in rows) * WORD_TOKENS / n
    plain = PROMPT_TOKENS + qa
    grounded = min(512, plain + 2 * (qa + CONTEXT_TOKENS))  # two retrieved pairs in the prompt; max_length
    ktokens = n * (3 * plain + grounded) * epochs / 1000
    scale = 1.0 if precision == "fp32" else 0.55
    return (FIXED_S[answers] + LOOP_S_PER_KTOKEN * ktokens) * scale


def one_point(n: int, answers: str, root: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    smallest = min(p for p, kind in args.points if kind == answers)
    data, test = synthetic_qa.write(root / "data", n, answers, args.test_questions, args.seed, test_from=smallest)
    out = root / "runs" / f"{answers}-{n}"
    flags = ["--test", str(test), "--out", str(out), "--epochs", str(args.epochs), "--precision", args.precision]
    r = timed_run.qatune_run(["run", str(data), *flags, *extra], root)
    summary = json.loads((out / "train" / "summary.json").read_text())
    prepared = json.loads((out / "data" / "report.json").read_text())
    scores = json.loads((out / "eval" / "test" / "scores.json").read_text())
    generated = timed_run.generating_models(out)
    new_tokens = sum(
        json.loads(line)["new_tokens"]
        for line in (out / "eval" / "test" / "generations.jsonl").read_text().splitlines()
        if json.loads(line)["model"] in generated
    )
    st = r["stages_s"]
    train, loop, val = st.get("train", 0.0), summary["train_seconds"], summary.get("eval_seconds") or 0.0
    stages = {
        "prepare": st.get("prepare", 0.0),
        "train_setup": round(train - loop - val, 1),
        "train_loop": round(loop, 1),
        "train_validation": round(val, 1),
        "eval": st.get("eval:test", 0.0),
        "report": st.get("report", 0.0),
        "outside": round(r["wall_s"] - sum(st.values()), 1),
    }
    epochs = summary["epochs_run"]
    return {
        "pairs": n,
        "answers": answers,
        "command": r["command"],
        "wall_s": r["wall_s"],
        "other_cores": r["other_cores"],
        "stages_s": stages,
        "train_stage_s": train,
        "epochs": epochs,
        "train_pairs": prepared["splits"]["train"],
        "train_augmented": prepared["splits"]["train_augmented"],
        "examples_per_epoch": summary["train_pairs"],
        "refusal_questions": summary.get("refusal_questions") or 0,  # trained with the refusal, in the above
        "tokens_per_epoch": summary["train_tokens"] // max(epochs, 1),
        "answer_tokens_per_epoch": summary["answer_tokens"] // max(epochs, 1),
        "tokens_per_pair": round(summary["train_tokens"] / max(epochs, 1) / n, 1),
        "batch_size": summary["batch_size"],
        "steps": summary["steps"],
        "examples_per_s": summary["examples_per_second"],
        "tokens_per_s": summary["tokens_per_second"],
        "peak_memory_gib": record.gib(summary["peak_memory_bytes"]),
        "precision": summary["precision"],
        "recall_questions": summary["val_pairs"],
        "eval_questions": scores["n"],
        "eval_generating_models": generated,
        "eval_new_tokens": new_tokens,
        "notes": [line.strip() for line in r["output"].splitlines() if "skipped" in line or "truncat" in line],
    }


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - slope * mx, slope


def growth(rows: list[dict]) -> dict[str, dict]:
    """Per answer length: per stage intercept (s) and slope (s per 100 pairs), tokens and examples per pair."""
    out = {}
    for answers in dict.fromkeys(r["answers"] for r in rows):
        mine = sorted((r for r in rows if r["answers"] == answers), key=lambda r: r["pairs"])
        xs = [float(r["pairs"]) for r in mine]
        fits = {s: _line(xs, [r["stages_s"][s] for r in mine]) for s in STAGES}
        fits["wall"] = _line(xs, [r["wall_s"] for r in mine])
        per_qm = [r["stages_s"]["eval"] / (r["eval_questions"] * len(r["eval_generating_models"])) for r in mine]
        out[answers] = {
            "points": [r["pairs"] for r in mine],
            "fitted": len(mine) >= 2,
            "intercept_s": {s: round(a, 1) for s, (a, _) in fits.items()},
            "s_per_100_pairs": {s: round(100 * b, 2) for s, (_, b) in fits.items()},
            "tokens_per_pair": round(sum(r["tokens_per_pair"] for r in mine) / len(mine), 1),
            "examples_per_pair": round(sum(r["examples_per_epoch"] / r["pairs"] for r in mine) / len(mine), 2),
            "loop_s_per_ktoken": round(
                1000 * sum(r["stages_s"]["train_loop"] for r in mine) / sum(r["tokens_per_epoch"] for r in mine), 2
            ),
            "eval_s_per_question_model": round(sum(per_qm) / len(per_qm), 2),
        }
    return out


def extrapolate(g: dict, n: int, epochs_run: int) -> dict[str, float]:
    """A default run (sweep 2,3, no --test) on n pairs of this answer length, from the fitted lines (see the
    module docstring for the assumptions); `epochs_run` = epochs of the measured points."""

    def fit(stage: str, pairs: float) -> float:
        return max(0.0, g["intercept_s"][stage] + g["s_per_100_pairs"][stage] * pairs / 100)

    trained = 0.9 * n
    est = {
        "prepare": fit("prepare", n),
        "train_setup": fit("train_setup", trained),
        "train_loop": fit("train_loop", trained) * 3 / epochs_run,
        "train_validation": fit("train_validation", trained) * 2,
        "eval": g["eval_s_per_question_model"] * (50 + 0.1 * n) * 5,
        "report": fit("report", n),
        "outside": fit("outside", n),
    }
    est["wall"] = sum(est.values())
    return {k: round(v) for k, v in est.items()}


def print_rows(rows: list[dict]) -> None:
    heads = ["pairs", "answers", "wall", *STAGES, "ex/epoch", "tok/epoch", "tok/pair", "ex/s", "eval new tok", "others"]
    print("\n| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        st = r["stages_s"]
        cells = [r["pairs"], r["answers"], f"{r['wall_s']:.0f}", *(f"{st[s]:.1f}" for s in STAGES)]
        cells += [r["examples_per_epoch"], r["tokens_per_epoch"], r["tokens_per_pair"], r["examples_per_s"]]
        cells += [r["eval_new_tokens"], f"{r['other_cores']:.2f}"]
        print("| " + " | ".join(map(str, cells)) + " |")


def print_growth(g: dict[str, dict], epochs: int) -> None:
    for answers, fit in g.items():
        print(f"\n{answers} answers, points {fit['points']}:")
        if not fit["fitted"]:
            stages = ", ".join(f"{s} {fit['intercept_s'][s]:.1f}" for s in (*STAGES, "wall"))
            print(f"  one point only, no slope: {stages} s")
        for s in (*STAGES, "wall") if fit["fitted"] else ():
            print(f"  {s:<17} {fit['intercept_s'][s]:>8.1f} s + {fit['s_per_100_pairs'][s]:>7.2f} s per 100 pairs")
        print(
            f"  {fit['tokens_per_pair']} training tokens and {fit['examples_per_pair']} examples per pair and epoch; "
            f"loop {fit['loop_s_per_ktoken']} s per 1k tokens; eval {fit['eval_s_per_question_model']} s per "
            "question and generating model"
        )
        if fit["fitted"]:
            for n in (100, 300, 1000):
                e = extrapolate(fit, n, epochs)
                parts = ", ".join(f"{k} {v}" for k, v in e.items() if k != "wall")
                print(f"  default run (sweep 2,3, no --test) on {n} pairs: ~{e['wall'] / 60:.0f} min ({parts} s)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=None, help="comma-separated sizes (with --answers: every combination)")
    ap.add_argument("--answers", default=None, help="short, long or short,long")
    ap.add_argument("--points", default=None, help=f"explicit PAIRS:ANSWERS list (default {DEFAULT_POINTS})")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--test-questions", type=int, default=20)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="dry run: tiny random model, tiny sizes")
    ap.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    ap.add_argument("--keep", default=None, help="keep data and run folders under this directory")
    ap.add_argument("--save", action="store_true", help="append to benchmarks/results/scaling.json")
    args = ap.parse_args(argv)
    if args.points is None and (args.pairs or args.answers):
        sizes, kinds = (args.pairs or "100,300,1000").split(","), (args.answers or "short").split(",")
        args.points = ",".join(f"{n}:{k}" for k in kinds for n in sizes)
    args.points = parse_points(args.points or (TINY_POINTS if args.tiny else DEFAULT_POINTS))
    extra: list[str] = []
    if args.tiny:
        tiny = record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny")
        extra = ["--model", str(tiny), "--max-new-tokens", "8"]
        args.test_questions = min(args.test_questions, 4)
    else:
        each = [estimate_s(n, kind, args.epochs, args.precision) for n, kind in args.points]
        points = ", ".join(f"{n} {kind} ~{s / 60:.0f} min" for (n, kind), s in zip(args.points, each, strict=True))
        print(f"points: {points}; estimated {sum(each) / 60:.0f} min on a quiet 2-core machine ({args.precision})")
        if args.estimate_only:
            return {}
    root = Path(args.keep or tempfile.mkdtemp(prefix="qatune-scaling-"))
    rows = []
    for n, kind in args.points:
        rows.append(one_point(n, kind, root, args, extra))
        r = rows[-1]
        print(f"{n} {kind} pairs: {r['wall_s']:.0f} s wall, other processes {r['other_cores']:.2f} cores", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    g = growth(rows)
    print_rows(rows)
    print_growth(g, args.epochs)
    result = {
        "command": " ".join(sys.argv),
        "tiny": args.tiny,
        "epochs": args.epochs,
        "test_questions": args.test_questions,
        "rows": rows,
        "growth": g,
    }
    if args.save:
        print(f"saved to {record.save('scaling', result)}")
    return result


if __name__ == "__main__":
    main()
