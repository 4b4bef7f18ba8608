"""The guard of a run (its refusal, the index's calibrated fallback, the `abstain` settings and the training pairs'
facts) and qatune's engine behind `guarded`: what eval, chat and serve call."""

from __future__ import annotations

from typing import Any

from qatune.trust.guard import Guard, Verdict, guarded


def run_guard(rundir: Any, config: Any, facts: bool = True) -> Guard:
    """How the run's models abstain: the refusal they were trained with (the training summary; else the config's),
    the index's calibrated fallback and the fact check as the config's `abstain` section says, and (with `facts`)
    the facts of the training pairs."""
    from qatune.rag.index import run_min_similarity
    from qatune.storage import read_jsonl

    refusal = trained_refusal(rundir, config)
    train = rundir.split_file("train")
    pairs = [r for r in read_jsonl(train) if not r.get("augmented_from")] if facts and train.exists() else []
    settings = config.abstain
    return Guard.from_pairs(
        refusal,
        pairs,
        min_similarity=run_min_similarity(rundir) if settings.retrieval_fallback else None,
        check_facts=settings.fact_check,
        check_questions=settings.question_check,
        quote=settings.quote if settings.quote > 0 else None,
    )


def trained_refusal(rundir: Any, config: Any) -> str:
    """The refusal the run's models were trained with (the training summary; else the config's)."""
    from qatune.storage import read_json
    from qatune.trust.refusal import run_refusal

    try:
        refusal = str(read_json(rundir.train_summary_json).get("refusal") or "")
    except (OSError, ValueError):
        refusal = ""
    return refusal or run_refusal(rundir, config.train.refusal)


def settings_of(guard: Guard) -> dict[str, Any]:
    """The guard's settings as an export's guard.json holds them (the facts are re-read from its index)."""
    return {
        "refusal": guard.refusal,
        "min_similarity": guard.min_similarity,
        "check_facts": guard.check_facts,
        "check_questions": guard.check_questions,
        "quote": guard.quote,
    }


def engine_answers(
    engine: Any,
    guard: Guard,
    model: str,
    conversations: list[list[dict]],
    references: list[str] | None = None,
    **generate: Any,
) -> list[tuple[Verdict, Any]]:
    """`guarded` with a run's engine: `model` names the adapter (`base`, `best`, `epoch-N`, or a grounded one)."""
    from qatune.rag import closed_book, is_grounded

    retriever = getattr(engine, "retriever", None) if is_grounded(model) else None

    def ask(todo: list[list[dict]], refs: list[str] | None) -> list[Any]:
        extra = {} if refs is None else {"references": refs}
        return engine.generate(model, todo, **generate, **extra)

    return guarded(
        guard,
        conversations,
        ask,
        tuned=closed_book(model) != "base",
        lookup=retriever.lookup if retriever is not None else None,
        references=references,
    )
