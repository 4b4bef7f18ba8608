"""The prepare stage's questions the data does not answer: the `unanswerable` eval set (the user's file, the
example's shipped set, or one generated from qatune's banks and near misses of the training questions) and the
refusal questions that train and calibrate abstention, none of them close to a question that is evaluated."""

from __future__ import annotations

from qatune.data.clean import question_key

NEAR_DUPLICATE = 0.9  # a refusal question this similar to an evaluated one would leak it into training


def unanswerable_sets(
    pairs: list[dict], rows: dict[str, list[dict]], asked: list[dict] | None, seed: int, kind: str
) -> tuple[list[dict], list[dict], str]:
    """(the `unanswerable` eval rows, the refusal rows with their `part`, how the eval set was made).

    `asked` is the eval set read from a file (None: generate one); `rows` the prepared splits."""
    from qatune.rag.embeddings import encode, load_embedder
    from qatune.trust.unanswerable import generated_sets

    embedder = load_embedder()
    train = [r for r in rows["train"] if not r.get("augmented_from")]
    texts = [t for p in pairs for t in (p["question"], p["answer"])]
    texts += [t for r in rows["test"] for t in (r["question"], r.get("answer") or "")]
    parts = generated_sets(train, texts, embedder, seed, with_eval=asked is None)
    evaluated = asked if asked is not None else [u.row() for u in parts["eval"]]
    held = [r["question"] for r in evaluated]  # near misses are meant to be close to answerable questions
    held += [r["question"] for r in rows["test"] if r.get("answerable") is False]
    candidates = [(part, u) for part in ("train", "val") for u in parts[part]]
    taken = {question_key(q) for name in ("val", "test", "unseen") for q in (r["question"] for r in rows[name])}
    taken |= {question_key(q) for q in held}
    candidates = [(part, u) for part, u in candidates if question_key(u.question) not in taken]
    if candidates and held:
        sims = encode(embedder, [u.question for _, u in candidates]) @ encode(embedder, held).T
        candidates = [c for c, s in zip(candidates, sims.max(axis=1), strict=True) if s < NEAR_DUPLICATE]
    refusals = [{"id": u.id, "question": u.question, "kind": u.kind, "part": part} for part, u in candidates]
    return evaluated, refusals, kind if asked is not None else "generated"
