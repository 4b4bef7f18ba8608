"""How often the right pair is among a grounded prompt's retrieved pairs: qatune's MiniLM ranking against a lexical
one (Okapi BM25 over each pair's question and answer, `rank_bm25`) and two ways of fusing them (reciprocal rank
fusion, and MiniLM's score plus a share of the BM25 score scaled to the best pair's). Reads a finished run's index
and the references of one eval set; a question counts when its reference is a training answer word for word.

    .venv/bin/python benchmarks/retrieval_rankings.py --run RUN                  # the test set, top 1 and top 2
    .venv/bin/python benchmarks/retrieval_rankings.py --run RUN --save
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

# Words too common to tell pairs apart (BM25 would weigh them by rarity anyway; short questions keep little else).
STOP_WORDS = frozenset(
    "a an the is are was were be do does did of in on at to for from by with and or what who when where which how i "
    "my me you your can will should must this that it there".split()
)


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP_WORDS]


def _ranks(scores: Any) -> Any:
    import numpy as np

    return np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)


def rankings(index: Any, embedder: Any, questions: list[str], weights: tuple[float, ...] = (0.1, 0.2, 0.3)) -> dict:
    """Each ranking's scores (questions x pairs): qatune's own, BM25's, and their fusions."""
    import numpy as np
    from rank_bm25 import BM25Okapi

    dense = np.zeros((len(questions), len(index.pairs)))
    for row, hits in zip(dense, index.lookup(embedder, list(questions), k=len(index.pairs)), strict=True):
        for j, score in hits.top:
            row[j] = score  # qatune's own match score for every pair
    bm25 = BM25Okapi([words(f"{p['question']} {p['answer']}") or ["-"] for p in index.pairs])
    lexical = np.array([bm25.get_scores(words(q)) for q in questions])
    out = {"MiniLM (qatune)": dense, "BM25": lexical}
    for c in (10, 60):
        out[f"reciprocal rank fusion, c={c}"] = 1.0 / (c + 1 + _ranks(dense)) + 1.0 / (c + 1 + _ranks(lexical))
    scaled = lexical / np.maximum(lexical.max(axis=1, keepdims=True), 1e-9)
    for w in weights:
        out[f"MiniLM + {w} x BM25/best"] = dense + w * scaled
    return out


def hits_at(scores: Any, gold: list[int], k: int) -> int:
    """Questions whose right pair (position in the index) is among the k best-scored pairs (ties: earlier pair)."""
    import numpy as np

    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return sum(1 for row, g in zip(order, gold, strict=True) if g in row)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--save", action="store_true", help="append the result to benchmarks/results/retrieval.json")
    args = ap.parse_args(argv)

    from qatune.rag.embeddings import load_embedder
    from qatune.rag.index import load_index
    from qatune.rundir import RunDir
    from qatune.storage import read_jsonl

    rundir = RunDir(args.run)
    index = load_index(rundir.root / "index")
    position = {}
    for i, pair in enumerate(index.pairs):
        position.setdefault(pair["answer"].strip(), i)
    rows = [r for r in read_jsonl(rundir.split_file(args.split)) if str(r.get("answer") or "").strip() in position]
    if not rows:
        sys.exit(f"{args.run}: no {args.split} question's reference is a training answer; nothing to rank")
    gold = [position[str(r["answer"]).strip()] for r in rows]
    scores = rankings(index, load_embedder(), [r["question"] for r in rows])
    results = {name: {"top1": hits_at(s, gold, 1), "top2": hits_at(s, gold, 2)} for name, s in scores.items()}
    print(f"{args.run} ({args.split}): {len(rows)} questions whose reference is one of {len(index.pairs)} pairs")
    for name, found in results.items():
        print(f"  {name:34s} right pair first {found['top1']:3d}, in the top 2 {found['top2']:3d}")
    if args.save:
        record.save("retrieval", {"run": str(args.run), "split": args.split, "questions": len(rows), **results})


if __name__ == "__main__":
    main()
