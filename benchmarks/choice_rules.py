"""How a grounded model's choice among its retrieved answers is scored: plain likelihood or PMI (likelihood with
the question against the same prompt without it), on the answer's opening or whole. Scores each rule on a run's
eval questions with the run's trained model, teacher-forced (no decoding), and prints ROUGE-L of the chosen
answers against the references, beside retrieval's first answer and the better of the retrieved ones.

    .venv/bin/python benchmarks/choice_rules.py --run RUN                 # best, the test split
    .venv/bin/python benchmarks/choice_rules.py --run RUN --openings 16,48,0 --save
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--model", default="best", help="the closed-book adapter whose grounded answers choose")
    ap.add_argument("--split", default="test")
    ap.add_argument("--openings", default="48,0", help="comma-separated opening lengths in tokens (0: whole)")
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/choice_rules.json")
    args = ap.parse_args(argv)

    from rouge_score import rouge_scorer

    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.generate.select import NO_QUESTION, opening, pick
    from qatune.rag.prompt import grounded_question
    from qatune.rundir import RunDir
    from qatune.storage import read_jsonl

    rundir = RunDir(args.run)
    engine = load_engine(rundir.root, load_for_run(rundir.root, None, {}, save=False), names=[args.model])
    rows = [r for r in read_jsonl(rundir.split_file(args.split)) if r.get("answer")]
    questions = [r["question"] for r in rows]
    contexts = engine.retriever.contexts(questions)
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(answers: list[str]) -> float:
        return statistics.mean(
            rouge.score(r["answer"], a)["rougeL"].fmeasure for r, a in zip(rows, answers, strict=True)
        )

    results = {
        "retrieval (first answer)": score([c[0]["answer"] for c in contexts]),
        "ceiling (better retrieved answer)": statistics.mean(
            max(rouge.score(r["answer"], p["answer"])["rougeL"].fmeasure for p in c)
            for r, c in zip(rows, contexts, strict=True)
        ),
    }
    for head in [int(h) for h in args.openings.split(",")]:
        cut = opening(engine.tokenizer, head)
        started = time.perf_counter()
        with_q, without_q = [], []
        for question, pairs in zip(questions, contexts, strict=True):
            for asked, into in ((question, with_q), (NO_QUESTION, without_q)):
                turn = grounded_question(asked, pairs)  # asked closed-book: the turn already holds the pairs
                into.append(engine.answer_nll(args.model, [(turn, cut(p["answer"])) for p in pairs], max_length=8192))
        seconds = time.perf_counter() - started
        name = f"{head}-token opening" if head else "whole answer"
        for rule in ("likelihood", "PMI"):
            picks = []
            for pairs, asked, anyway in zip(contexts, with_q, without_q, strict=True):
                picks.append(pairs[pick(asked, anyway if rule == "PMI" else [0.0] * len(asked))]["answer"])
            results[f"{rule}, {name}"] = score(picks)
        print(f"{name}: scored in {seconds:.0f} s", flush=True)
    for rule, value in results.items():
        print(f"{rule:40s} ROUGE-L {value:.3f}")
    if args.save:
        saved = {"command": " ".join(sys.argv), "run": str(args.run), "questions": len(rows), "rougeL": results}
        print(f"saved to {record.save('choice_rules', saved)}")


if __name__ == "__main__":
    main()
