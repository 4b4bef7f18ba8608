"""The rows eval saves in generations.jsonl: what each model answered (or that it abstained, and why), scored
against the reference with every metric and the key-fact check; questions the data does not answer have no
reference, so only whether the model abstained (and the refusal's NLL) is recorded for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qatune.evaluate import metrics as M
from qatune.prompts import messages_for
from qatune.rag.baseline import RETRIEVAL, nearest_answers, retrieved_k, training_pairs
from qatune.trust.guard import Guard, Verdict
from qatune.trust.run import engine_answers

if TYPE_CHECKING:
    from qatune.rag.embeddings import PairCosine
    from qatune.rundir import RunDir


def answerable(q: dict) -> bool:
    return q.get("answerable") is not False


def make_row(
    model: str, q: dict, verdict: Verdict, metrics: dict, stopped: bool, new_tokens: int, chosen: bool = False
) -> dict:
    row = {
        "model": model,
        "question_id": str(q["id"]),
        "question": q["question"],
        "reference": q["answer"],
        "answer": verdict.text,
        "metrics": metrics,
        "stopped": bool(stopped),
        "new_tokens": int(new_tokens),
        "answerable": answerable(q),
        "abstained": verdict.abstained,
        "abstained_by": verdict.by,
    }
    if chosen and not verdict.abstained:  # chosen among the retrieved answers, not written (generate/select.py)
        row["quoted"] = row["chosen"] = True
    elif verdict.quoted:  # shown as the retrieved answer it was closest to; the model's own words kept
        row["quoted"] = True
        row["raw_answer"] = verdict.raw
    elif verdict.raw is not None:  # a check replaced the model's own answer: kept, to show what was withheld
        row["raw_answer"] = verdict.raw
    if verdict.unknown:
        row["unknown_facts"] = list(verdict.unknown)
    return row


def _metrics(q: dict, text: str, semantic: float | None, nll: float | None) -> dict[str, Any]:
    if not answerable(q):
        return {**dict.fromkeys(M.METRICS), "answer_nll": nll}
    return M.answer_metrics(text, q["answer"], semantic=semantic, answer_nll=nll, question=q["question"])


def _semantic(cosine: PairCosine, batch: list[dict], texts: list[str]) -> list[float | None]:
    pairs = [(t, q["answer"]) for q, t in zip(batch, texts, strict=True) if answerable(q)]
    scored = iter(cosine([t for t, _ in pairs], [r for _, r in pairs]) if pairs else [])
    return [next(scored) if answerable(q) else None for q in batch]


def generated_rows(
    engine: Any, cosine: PairCosine, model: str, batch: list[dict], budget: int, batch_size: int, guard: Guard
) -> list[dict]:
    """Answers of `model` through the guard (the retrieval fallback for a grounded model, the fact check for a
    fine-tuned one). The reference scored by NLL is the refusal where the data has no answer."""
    convs = [messages_for(q["question"]) for q in batch]
    references = [q["answer"] if answerable(q) else guard.refusal for q in batch]
    answered = engine_answers(
        engine,
        guard,
        model,
        convs,
        references=references,
        max_new_tokens=budget,
        batch_size=batch_size,
        fit_budget=True,
        stop_on_copy=guard.quote is not None,
        cut_loops=True,
    )
    semantic = _semantic(cosine, batch, [v.text for v, _ in answered])
    rows = []
    for q, (v, g), s in zip(batch, answered, semantic, strict=True):
        nll = g.reference_nll if g is not None else None
        ended = g is None or g.stopped or v.quoted  # a quoted answer is a retrieved answer, whole
        chosen = g is not None and g.chosen
        rows.append(make_row(model, q, v, _metrics(q, v.text, s, nll), ended, g.new_tokens if g else 0, chosen))
    return rows


def retrieval_rows(rundir: RunDir, cosine: PairCosine, batch: list[dict], guard: Guard) -> list[dict]:
    """Retrieval's answers (the refusal where the fallback says no training question is close enough); in a run with
    grounded models each row also lists the k answers a grounded prompt would hold (`retrieved`, first = the
    answer), from which scores.json reports the retrieval ceiling."""
    train = training_pairs(rundir.require(rundir.split_file("train"), "run qatune prepare first"))
    k = retrieved_k(rundir)
    matches = nearest_answers(cosine.embedder, train, [q["question"] for q in batch], k)
    verdicts = [guard.fallback() if guard.falls_back(m.score) else Verdict(m.answer, False) for m in matches]
    semantic = _semantic(cosine, batch, [v.text for v in verdicts])
    rows = []
    for q, m, v, s in zip(batch, matches, verdicts, semantic, strict=True):
        row = make_row(RETRIEVAL, q, v, _metrics(q, v.text, s, None), True, 0)
        if k > 1:
            row["retrieved"] = [m.answer, *m.runners_up]
        rows.append(row)
    return rows
