"""A run's model exported as GGUF and answered by llama.cpp itself, against qatune's own greedy answers for the
same model (the engine in fp32) on the example test questions: at f16, how many answers differ and, for each,
the fp32 model's top-2 logit gap at the first differing token (a near-tie when it is small); at f16 and q8_0, the
ROUGE-L against the references. Needs the `llamacpp` extra.

    .venv/bin/python benchmarks/gguf_check.py --run runs/example                  # best, 37 example questions
    .venv/bin/python benchmarks/gguf_check.py --run runs/example --grounded       # grounded, and the f16 export's
                                                                                  # ask.py script against it
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _engine(run: Path, model: str):
    from qatune.config import load_for_run
    from qatune.generate import load_engine

    config = load_for_run(run, None, {"train": {"precision": "fp32"}}, save=False)
    return load_engine(run, config, names=[model]), config


def _llama_answers(gguf: Path, conversations: list[list[dict]], budget: int) -> tuple[list[str], float]:
    from qatune.rag.ask import GGUFModel

    model = GGUFModel(gguf)
    start = time.perf_counter()
    answers = [model.answer(c, budget) for c in conversations]
    return answers, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", default="best")
    parser.add_argument("--questions", type=Path, default=None, help="default: the example test questions")
    parser.add_argument("--grounded", action="store_true", help="the grounded model (retrieved pairs in the prompt)")
    parser.add_argument("--out", type=Path, default=None, help="keep the exports here (default: a temp folder)")
    args = parser.parse_args()

    from qatune.data.prepare import example_test_path, load_questions
    from qatune.evaluate.budget import answer_budget
    from qatune.evaluate.metrics import rouge
    from qatune.export import export
    from qatune.portable.agreement import first_gap
    from qatune.prompts import messages_for
    from qatune.rag import grounded_name
    from qatune.rundir import RunDir

    name = grounded_name(args.model) if args.grounded else args.model
    engine, config = _engine(args.run, args.model)
    rows = load_questions(args.questions or example_test_path(), config)
    budget = answer_budget(RunDir(args.run), config)
    conversations = [messages_for(r["question"]) for r in rows]
    asked = engine.grounded(name, conversations)  # serve's prompt: the retrieved pairs in the user turn
    start = time.perf_counter()
    ours = [g.text for g in engine.generate(name, conversations, max_new_tokens=budget, batch_size=8)]
    result = {"run": str(args.run), "model": name, "questions": len(rows), "max_new_tokens": budget}
    result["qatune_fp32_s"] = round(time.perf_counter() - start, 1)
    refs = [r["answer"] for r in rows]
    result["rouge_l"] = {"qatune_fp32": statistics.mean(rouge(a, b)["rougeL"] for a, b in zip(ours, refs, strict=True))}
    folder = Path(args.out or tempfile.mkdtemp(prefix="gguf-check-"))
    for quant in ("f16", "q8_0"):
        out = export(args.run, args.model, folder / quant, fmt="gguf", quant=quant)
        answers, seconds = _llama_answers(out / "model.gguf", asked, budget)
        result[f"llama_cpp_{quant}_s"] = round(seconds, 1)
        result["rouge_l"][quant] = statistics.mean(rouge(a, b)["rougeL"] for a, b in zip(answers, refs, strict=True))
        differ = [i for i, (a, b) in enumerate(zip(ours, answers, strict=True)) if a != b]
        result[f"{quant}_differ"] = len(differ)
        if quant == "f16":
            result["f16_differences"] = [
                dict(
                    zip(
                        ("question", "token", "top2_gap"),
                        (rows[i]["question"], *first_gap(engine, name, conversations[i], ours[i], answers[i])),
                        strict=True,
                    )
                )
                | {"qatune": ours[i], "llama_cpp": answers[i]}
                for i in differ
            ]
    result["q8_0_minus_f16_rouge_l"] = result["rouge_l"]["q8_0"] - result["rouge_l"]["f16"]
    if args.grounded:  # the export folder's own script: its retrieval and prompt, in a fresh interpreter
        script = [sys.executable, str(folder / "f16" / "ask.py"), "--json", "--max-tokens", str(budget)]
        proc = subprocess.run(script, input="\n".join(r["question"] for r in rows), capture_output=True, text=True)
        asked_answers = [json.loads(line)["answer"] for line in proc.stdout.splitlines() if line.startswith("{")]
        result["ask_py_f16_differ"] = sum(a != b for a, b in zip(ours, asked_answers, strict=True))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
