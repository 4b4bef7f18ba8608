"""Lookup drafts must not change answers: every model of a run answers the run's test questions with qatune's
decoding and with plain greedy decoding (one token per pass), and the answers are compared text for text.

    .venv/bin/python benchmarks/decode_check.py --run runs/example            # after `qatune run`
    .venv/bin/python benchmarks/decode_check.py --run RUN --draft-rows 8      # drafting from more rows on
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--draft-rows", type=int, default=None, help="rows left when drafting starts (default: qatune's)")
    ap.add_argument("--precision", default=None, help="override the run's precision (fp32: no bf16 rounding)")
    ap.add_argument("--models", default=None, help="comma-separated model names (default: base and every adapter)")
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/decode_check.json")
    args = ap.parse_args(argv)

    from qatune import config as cfg
    from qatune.generate import decoding, load_engine
    from qatune.generate import engine as engine_module
    from qatune.prompts import messages_for
    from qatune.rundir import RunDir
    from qatune.storage import read_jsonl

    if args.draft_rows:
        decoding.DRAFT_ROWS = args.draft_rows
    rundir = RunDir(args.run)
    overrides = {"train": {"precision": args.precision}} if args.precision else {}
    engine = load_engine(args.run, cfg.load(args.run / "config.yaml", overrides))
    conversations = [messages_for(row["question"]) for row in read_jsonl(rundir.split_file("test"))]
    rows = {}
    for name in args.models.split(",") if args.models else engine.names:
        answers, seconds = {}, {}
        for lookup in (False, True):
            engine_module.greedy_decode = functools.partial(decoding.greedy_decode, lookup=lookup)
            start = time.perf_counter()
            answers[lookup] = [g.text for g in engine.generate(name, conversations, max_new_tokens=256)]
            seconds[lookup] = time.perf_counter() - start
        same = sum(a == b for a, b in zip(answers[False], answers[True], strict=True))
        rows[name] = {
            "questions": len(conversations),
            "equal": same,
            "plain_s": seconds[False],
            "drafts_s": seconds[True],
        }
        print(
            f"{name:<10} {same}/{len(conversations)} answers equal; plain {seconds[False]:.2f} s, "
            f"with lookup drafts {seconds[True]:.2f} s",
            flush=True,
        )
    total = sum(r["equal"] for r in rows.values()), sum(r["questions"] for r in rows.values())
    print(
        f"{total[0]}/{total[1]} answers equal "
        f"(draft rows {decoding.DRAFT_ROWS}, precision {args.precision or 'the run'})"
    )
    if args.save:
        path = record.save(
            "decode_check",
            {
                "command": " ".join(sys.argv),
                "run": str(args.run),
                "draft_rows": decoding.DRAFT_ROWS,
                "precision": args.precision or "run's",
                "rows": rows,
            },
        )
        print(f"saved to {path}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
