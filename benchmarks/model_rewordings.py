"""Model-written question rewordings against qatune's rule + WordNet ones, at equal training cost.

`qatune prepare` makes the run as usual (2 rewordings per training question, `mixed`); then the default model,
prompted with four fixed domain-neutral examples, samples rewordings of every training question; a sample is
kept only when it is a question, keeps every number and capitalized name of the original and adds none, is
not a question the data already holds, and its MiniLM cosine to the original is at least `--min-cosine`
(meaning kept). The most different kept samples replace the rule-made rewordings of that question (the others
keep theirs), so both variants train on the same number of rows. Then `qatune train/eval/report` run on it;
compare the report with a default run of the same data (`qatune run`).

    .venv/bin/python benchmarks/model_rewordings.py --out /tmp/mr_example --precision fp32
    .venv/bin/python benchmarks/model_rewordings.py ../shared/seed/QA_pair.xlsx \
        --test ../shared/seed/paraphrases_test.csv --out /tmp/mr_seed --precision fp32
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

SHOTS = (
    ("When is the store open on weekends?", "What are the weekend opening hours of the store?"),
    ("How much does the premium plan cost per month?", "What is the monthly price of the premium plan?"),
    ("Who should I contact about a billing error?", "If my bill is wrong, whom do I reach out to?"),
    ("Can I bring my dog to the office?", "Are dogs allowed in the office?"),
)


def protected(text: str) -> set[str]:
    """Words with a digit (numbers, dates, times, codes) and capitalized words after the first (names)."""
    words = [w.strip("\"'()[]{},.;:!?") for w in text.split()]
    words = [w[:-2] if w.endswith("'s") else w for w in words]
    return {
        w
        for i, w in enumerate(words)
        if w
        and w != "I"
        and (any(c.isdigit() for c in w) or (i > 0 and w[0].isupper()) or sum(map(str.isupper, w)) > 1)
    }


def acceptable(original: str, candidate: str, taken: set[str]) -> bool:
    from qatune.data.clean import question_key

    return (
        candidate.endswith("?")
        and 3 <= len(candidate.split()) <= 2 * len(original.split()) + 4
        and question_key(candidate) not in taken
        and protected(candidate) == protected(original)
    )


def sample_rewordings(questions: list[str], samples: int, seed: int, batch: int = 16) -> list[list[str]]:
    import torch

    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model

    path = resolve_model("default")
    tokenizer = load_tokenizer(path)
    model = load_base(path, choose_placement("none", "fp32"))
    model.eval()
    tokenizer.padding_side = "left"
    head = "".join(f"Question: {a}\nSame question in other words: {b}\n\n" for a, b in SHOTS)
    out: list[list[str]] = []
    torch.manual_seed(seed)
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        enc = tokenizer(
            [f"{head}Question: {q}\nSame question in other words:" for q in chunk], return_tensors="pt", padding=True
        )
        with torch.inference_mode():
            ids = model.generate(
                **enc,
                max_new_tokens=32,
                do_sample=True,
                temperature=0.7,
                top_p=0.9,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i in range(len(chunk)):
            out.append([t.strip().split("\n")[0].strip() for t in texts[i * samples : (i + 1) * samples]])
        print(f"  sampled {min(start + batch, len(questions))}/{len(questions)}", flush=True)
    return out


def rewrite_training_rows(run: Path, samples: int, min_cosine: float, seed: int) -> dict:
    from qatune.data.clean import question_key
    from qatune.rag.embeddings import encode, load_embedder
    from qatune.storage import read_jsonl, write_jsonl

    path = run / "data" / "train.jsonl"
    rows = read_jsonl(path)
    originals = [r for r in rows if not r.get("augmented_from")]
    taken = {question_key(r["question"]) for r in rows}
    for other in (run / "data").glob("*.jsonl"):  # held-out questions stay unseen
        if other != path:
            taken |= {question_key(r["question"]) for r in read_jsonl(other)}
    sampled = sample_rewordings([r["question"] for r in originals], samples, seed)
    embedder = load_embedder()
    kept: dict[str, list[str]] = {}
    accepted = 0
    for row, cands in zip(originals, sampled, strict=True):
        cands = list(dict.fromkeys(c for c in cands if acceptable(row["question"], c, taken)))
        if not cands:
            continue
        vectors = encode(embedder, [row["question"], *cands])
        cosine = vectors[1:] @ vectors[0]
        good = sorted((float(c), q) for c, q in zip(cosine, cands, strict=True) if c >= min_cosine)
        kept[str(row["id"])] = [q for _, q in good]  # most different first
        accepted += len(good)
    replaced = 0
    for row in rows:
        source = str(row.get("augmented_from") or "")
        if source and kept.get(source):
            row["question"] = kept[source].pop(0)
            row["reworded_by"] = "model"
            replaced += 1
    write_jsonl(path, rows)
    examples = [(r["augmented_from"], r["question"]) for r in rows if r.get("reworded_by") == "model"]
    random.Random(seed).shuffle(examples)
    return {
        "training_questions": len(originals),
        "rewordings": sum(1 for r in rows if r.get("augmented_from")),
        "model_written": replaced,
        "samples": samples * len(originals),
        "samples_accepted": accepted,
        "examples": examples[:12],
    }


def qatune(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "qatune", *args], check=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="spreadsheet (default: the embedded example)")
    ap.add_argument("--test")
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=8, help="samples per training question")
    ap.add_argument("--min-cosine", type=float, default=0.8)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    run = Path(a.out)
    data = [a.data] if a.data else []
    if a.data is None and a.test is None:
        from qatune.data.prepare import example_data_path, example_test_path

        data, a.test = [str(example_data_path())], str(example_test_path())
    qatune("prepare", *data, *(["--test", a.test] if a.test else []), "--out", str(run), "--quiet")
    start = time.perf_counter()
    stats = rewrite_training_rows(run, a.samples, a.min_cosine, a.seed)
    stats["rewording_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(stats, indent=1))
    qatune("train", "--run", str(run), "--precision", a.precision, "--quiet")
    qatune("eval", "--run", str(run), "--quiet")
    qatune("report", "--run", str(run), "--quiet")
    (run / "model_rewordings.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


if __name__ == "__main__":
    main()
