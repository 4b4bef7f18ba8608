"""The eval stage entry: answer an eval set with base, the retrieval baseline and every fine-tuned model
(one base in memory, adapters switched), append each batch to generations.jsonl, then score it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune import console
from qatune.console import QatuneError
from qatune.evaluate import metrics as M
from qatune.evaluate.budget import answer_budget
from qatune.evaluate.rows import generated_rows, retrieval_rows
from qatune.evaluate.scores import build_scores, combined_responses, print_results
from qatune.evaluate.state import (
    SPLIT_SETS,
    UNANSWERABLE_SET,
    QuestionSet,
    is_current,
    mark_scored,
    model_fingerprints,
    questions_key,
    sync,
    wanted_models,
)
from qatune.generate import BASE
from qatune.rag.baseline import RETRIEVAL
from qatune.rundir import RunDir, check_name
from qatune.storage import append_jsonl, atomic_write_json, read_jsonl
from qatune.trust.run import run_guard

if TYPE_CHECKING:
    from qatune.config import Config
    from qatune.eta import RunClock

__all__ = ["evaluate", "is_current"]
UNSEEN = "unseen"  # the split of pairs whose facts were held out of training
VLLM_CHUNK = 256  # vLLM schedules its own batches; this only sets how often answers are saved


def evaluate(
    run: Path,
    config: Config,
    questions: Path | None = None,
    name: str | None = None,
    unanswerable: bool = False,
    clock: RunClock | None = None,
) -> dict:
    """Answer what is missing, then write scores.json and combined_responses.json; returns the scores.

    With `unanswerable`, `questions` is a file of questions the data does not answer (eval set `unanswerable`
    unless named otherwise): the right response to each is to abstain. `clock`: the run's clock, told about every
    batch of answers generated."""
    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found; run qatune prepare and qatune train first", path=run)
    qset = load_question_set(rundir, config, questions, name, unanswerable)
    models = wanted_models(rundir, config, name=qset.name)
    if config.eval.models is not None and BASE not in config.eval.models:
        console.info("scoring base too: every model is compared with it")
    if not any(m not in (BASE, RETRIEVAL) for m in models):
        console.warn(f"no fine-tuned model in {rundir.models_dir}: scoring base and retrieval only")
    rows = sync(rundir, qset, model_fingerprints(rundir, config, models))
    done = {(r["model"], str(r["question_id"])) for r in rows}
    todo = {m: [q for q in qset.rows if (m, str(q["id"])) not in done] for m in models}
    if any(todo.values()):
        _answer_missing(rundir, config, qset, todo, rows, len(done & _pairs(models, qset)), clock)
    saved = read_jsonl(rundir.eval_generations(qset.name))
    by_key = {(r["model"], str(r["question_id"])): r for r in saved}
    extra, unavailable = _bertscore(config, qset, models, by_key)
    scores = build_scores(qset, models, by_key, resamples=config.eval.bootstrap, extra=extra, unavailable=unavailable)
    atomic_write_json(rundir.eval_combined(qset.name), combined_responses(qset, models, by_key))
    atomic_write_json(rundir.eval_scores(qset.name), scores)
    mark_scored(rundir, qset.name, models, config)
    print_results(scores)
    console.info(f"eval results: {rundir.eval_dir(qset.name)}")
    return scores


def _pairs(models: list[str], qset: QuestionSet) -> set[tuple[str, str]]:
    return {(m, str(q["id"])) for m in models for q in qset.rows}


def load_question_set(
    rundir: RunDir, config: Config, questions: Path | None, name: str | None, unanswerable: bool = False
) -> QuestionSet:
    """The run's test split (name `test`; `unseen` and `unanswerable` name the other split sets) or a questions
    file read by prepare's rules (name = its stem; with `unanswerable`, `unanswerable`)."""
    if questions is None:
        split = name if name in SPLIT_SETS else "test"
        source = rundir.require(rundir.split_file(split), "run qatune prepare first (or pass --questions FILE)")
        try:
            rows, default = read_jsonl(source), split
        except ValueError as exc:
            raise QatuneError(f"unreadable line ({exc}); run qatune prepare again", path=source) from None
    else:
        source = Path(questions).expanduser().resolve()
        if not source.is_file():
            raise QatuneError("questions file not found; check the path", path=questions)
        from qatune.data.prepare import load_questions, load_unanswerable

        if unanswerable:
            rows, default = load_unanswerable(source, config, rundir), UNANSWERABLE_SET
        else:
            rows, default = load_questions(source, config, extra_columns=("answerable",)), source.stem
    name = name or default
    try:
        name = check_name(name, "eval set name")
    except QatuneError as exc:
        raise QatuneError(f"{exc}; choose one with --name") from None
    _check_rows(rows, source)
    is_split = questions is None
    return QuestionSet(name=name, rows=rows, source=source, key=questions_key(source, config, is_split))


def _check_rows(rows: list[dict], source: Path) -> None:
    if not rows:
        raise QatuneError(
            "holds no questions to evaluate (prepare with --test-frac > 0 or --test FILE, or pass --questions FILE)",
            path=source,
        )
    seen: set[str] = set()
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str) or "id" not in row:
            raise QatuneError(
                "each line needs 'id', 'question' and 'answer'; run qatune prepare again",
                path=source,
                row=row.get("source_row", i),
            )
        if str(row["id"]) in seen:
            raise QatuneError(f"question id {row['id']!r} appears twice", path=source, row=row.get("source_row", i))
        seen.add(str(row["id"]))


def _answer_missing(
    rundir: RunDir,
    config: Config,
    qset: QuestionSet,
    todo: dict[str, list[dict]],
    saved: list[dict],
    done: int,
    clock: RunClock | None,
) -> None:
    from qatune.rag.embeddings import PairCosine, load_embedder

    known = {(r["answer"], r["reference"]): r["metrics"].get("semantic") for r in saved}
    cosine = PairCosine(load_embedder(), {k: v for k, v in known.items() if v is not None})
    out = rundir.eval_generations(qset.name)
    twins = copies(model_fingerprints(rundir, config, list(todo)))
    guard = run_guard(rundir, config)
    with _progress(len(todo) * len(qset.rows), done, clock) as advance:
        if todo.get(RETRIEVAL):
            rows = retrieval_rows(rundir, cosine, todo[RETRIEVAL], guard)
            append_jsonl(out, rows)
            advance(rows)
        generated = [m for m in todo if m != RETRIEVAL and m not in twins and todo[m]]
        if generated:
            engine = _load_engine(rundir.root, config, [m for m in generated if m != BASE])
            if any(engine.chooses(m) for m in generated):
                console.info(
                    "long answers: grounded models answer with the retrieved answer their question makes most "
                    "probable, whole, instead of writing one (--select off writes them)"
                )
            chunk = _chunk_size(config, engine)
            budget = answer_budget(rundir, config)
            for model in generated:
                pending = sorted(todo[model], key=lambda q: len(q["question"]))
                chooses = engine.chooses(model)
                for start in range(0, len(pending), chunk):
                    batch, began = pending[start : start + chunk], time.monotonic()
                    rows = generated_rows(engine, cosine, model, batch, budget, chunk, guard)
                    append_jsonl(out, rows)  # one fsync'd batch: a crash loses at most this batch
                    advance(rows, generated=True, seconds=time.monotonic() - began, chosen=chooses)
        for model, twin in twins.items():
            wanted = {str(q["id"]) for q in todo[model]}
            rows = [dict(r, model=model) for r in read_jsonl(out) if r["model"] == twin and r["question_id"] in wanted]
            append_jsonl(out, rows)
            advance(rows)


def copies(prints: dict[str, str]) -> dict[str, str]:
    """Adapters with the same weights as an earlier one (`best` is a copy of an epoch): answers are copied."""
    first: dict[str, str] = {}
    twins = {}
    for model, fingerprint in prints.items():
        if model in (BASE, RETRIEVAL):
            continue
        if fingerprint in first:
            twins[model] = first[fingerprint]
        else:
            first[fingerprint] = model
    return twins


def _load_engine(run: Path, config: Config, adapters: list[str]) -> Any:
    if config.eval.engine == "vllm":
        from qatune.generate.vllm import load_vllm_engine

        return load_vllm_engine(run, config, adapters)
    from qatune.generate import load_engine

    return load_engine(run, config, [BASE, *adapters])


def _chunk_size(config: Config, engine: Any) -> int:
    from qatune.generate import auto_batch_size

    if config.eval.engine == "vllm" and config.eval.batch_size == "auto":
        return VLLM_CHUNK
    return auto_batch_size(config.eval.batch_size, engine.device)


def _bertscore(
    config: Config, qset: QuestionSet, models: list[str], by_key: dict
) -> tuple[dict[str, dict[tuple[str, str], float]], dict[str, str]]:
    """BERTScore F1 per answer when asked for and available locally; otherwise the reason it is missing."""
    if not config.eval.bertscore:
        return {}, {"bertscore": "not requested (--bertscore needs bert-score and roberta-large locally)"}
    reason = M.bertscore_unavailable()
    if reason:
        console.warn(f"BERTScore skipped: {reason}")
        return {}, {"bertscore": reason}
    keys = [(m, str(q["id"])) for m in models for q in qset.rows]
    f1 = M.bertscore_f1([by_key[k]["answer"] for k in keys], [by_key[k]["reference"] for k in keys])
    return {"bertscore": dict(zip(keys, f1, strict=True))}, {}


@contextlib.contextmanager
def _progress(total: int, done: int, clock: RunClock | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar over models x questions (nothing in quiet mode); the rows a model generated (not
    retrieval's or copied ones) also go to the run's clock, which measures the eval set's rate from them."""

    def report(rows: list[dict], generated: bool = False, seconds: float = 0.0, chosen: bool = False) -> None:
        if generated and clock is not None:
            clock.answered(rows, seconds, chosen)

    if console.is_quiet():
        yield report
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    footer = clock.live_line if clock is not None else None
    with console.progress_bar(*columns, transient=True, footer=footer) as bar:
        task = bar.add_task("eval", total=total, completed=done)

        def advance(rows: list[dict], generated: bool = False, seconds: float = 0.0, chosen: bool = False) -> None:
            report(rows, generated, seconds, chosen)
            bar.advance(task, len(rows))

        yield advance
