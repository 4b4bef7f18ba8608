"""What an eval set's saved generations were made from (RUN/eval/NAME/inputs.json: the questions file's hash, one
fingerprint per model), so a rerun keeps only rows of RUN/eval/NAME/generations.jsonl that are still valid,
generates the rest, and knows when it is done; and which models an eval scores."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, info
from qatune.evaluate.metrics import METRICS
from qatune.generate import BASE
from qatune.generate.budget import HEADROOM, MARGIN
from qatune.generate.decoding import LOOP_TOKENS
from qatune.rag import RAG_SUFFIX, closed_book, is_grounded
from qatune.rag.baseline import RETRIEVAL, retrieved_k
from qatune.rag.index import vectors_sha256
from qatune.rundir import RunDir, check_name
from qatune.storage import atomic_write_json, file_sha256, read_json, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from qatune.config import Config


UNANSWERABLE_SET = "unanswerable"  # questions the data does not answer: the right response is to abstain
SPLIT_SETS = ("test", "unseen", UNANSWERABLE_SET)  # eval sets read from the run's own split files


@dataclass(frozen=True)
class QuestionSet:
    name: str
    rows: list[dict]  # id, question, answer (source_row when known)
    source: Path
    key: str  # changes when the file or the rules reading it change


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def questions_key(source: Path, config: Config, is_split: bool) -> str:
    """The split file's bytes, or an external file's bytes plus the column/sheet rules that read it."""
    rules = None if is_split else config.prepare.model_dump(include={"question_col", "answer_col", "sheet"})
    return _sha([file_sha256(source), rules])


def wanted_models(
    rundir: RunDir, config: Config, adapters: list[str] | None = None, name: str | None = None
) -> list[str]:
    """`base`, `retrieval`, then each saved adapter (or the --models list, base always kept for comparisons).
    On the eval set `unanswerable` (`name`), `best` stands for the epochs: it is the one the recommendation weighs.

    `adapters`: the ones a training still to run will save (and its index, when it trains grounded)."""
    saved = rundir.adapter_names() if adapters is None else adapters
    indexed = rundir.has_index or (adapters is not None and config.train.grounded)
    grounded = [n + RAG_SUFFIX for n in (BASE, *saved)] if indexed else []
    if config.eval.models is None:  # grounded by default: the base model and `best` (grounded epoch-N on request)
        if name == UNANSWERABLE_SET and "best" in saved:
            saved = ["best"]
        return [BASE, RETRIEVAL, *saved, *[g for g in grounded if closed_book(g) in (BASE, "best")]]
    names = [check_name(closed_book(m), "model name") + m[len(closed_book(m)) :] for m in config.eval.models]
    names = list(dict.fromkeys(names))
    unknown = [m for m in names if m not in (BASE, RETRIEVAL, *saved, *grounded)]
    if unknown:
        available = ", ".join([BASE, RETRIEVAL, *saved, *grounded])
        raise QatuneError(f"no model {unknown[0]!r} in {rundir.models_dir}; available: {available}")
    if BASE not in names:
        names.insert(0, BASE)  # every model is compared with it
    return names


def model_fingerprints(rundir: RunDir, config: Config, models: list[str]) -> dict[str, str]:
    """A saved answer stays valid while its model, decoding settings, abstention settings and metric set are
    unchanged."""
    from qatune.generate.select import selects
    from qatune.trust.run import run_guard

    guard = run_guard(rundir, config, facts=False).fingerprint()
    base = _sha(
        {
            "model": config.model,
            "quant": config.train.quant,
            "precision": config.train.precision,
            "max_new_tokens": _budget_source(rundir, config),
            "fitted_budgets": [HEADROOM, MARGIN, vectors_sha256(rundir.index_dir)],  # from the retrieved answers
            "loops_cut": LOOP_TOKENS,
            "engine": config.eval.engine,
            "metrics": METRICS,
            "abstain": guard,
        }
    )
    prints: dict[str, str] = {}
    vectors = vectors_sha256(rundir.index_dir)
    chosen = [["chosen", config.train.answer_head]] if any(map(is_grounded, models)) and selects(rundir, config) else []
    for name in models:
        if is_grounded(name):
            closed = model_fingerprints(rundir, config, [closed_book(name)])[closed_book(name)]
            prints[name] = _sha([closed, RAG_SUFFIX, vectors, ["context_head", config.train.answer_head], *chosen])
        elif name == BASE:
            prints[name] = base
        elif name == RETRIEVAL:
            train = rundir.split_file("train")
            prints[name] = _sha([file_sha256(train) if train.exists() else None, METRICS, retrieved_k(rundir), guard])
        else:
            folder = rundir.model_dir(name)
            files = sorted(p for p in folder.iterdir() if p.name.startswith("adapter_"))
            prints[name] = _sha([base, [(p.name, file_sha256(p)) for p in files]])
    return prints


def _budget_source(rundir: RunDir, config: Config) -> Any:
    """What the eval's answer budget is made from: a number, or `auto` and the trained answers it measures."""
    if config.eval.max_new_tokens != "auto":
        return config.eval.max_new_tokens
    train = rundir.split_file("train")
    return ["auto", file_sha256(train) if train.exists() else None]


def _read_state(path: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        state = read_json(path)
        if isinstance(state, dict) and isinstance(state.get("models"), dict):
            return state
    return {}


def _complete_lines(path: Path) -> bool:
    """False when a crash left a half-written last line (appending after it would corrupt the file)."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def sync(rundir: RunDir, qset: QuestionSet, prints: dict[str, str]) -> list[dict]:
    """Drop what the current inputs invalidate, record the fingerprints, return the rows still valid."""
    out = rundir.eval_generations(qset.name)
    state = _read_state(rundir.eval_inputs(qset.name))
    if state.get("questions") != qset.key:
        if out.exists():
            info(f"{qset.source} changed since the last eval: starting eval set '{qset.name}' afresh")
        for stale in (out, rundir.eval_scores(qset.name), rundir.eval_combined(qset.name)):
            stale.unlink(missing_ok=True)
        state = {"models": {}}
    try:
        saved = read_jsonl(out)
    except ValueError as exc:
        raise QatuneError(
            f"unreadable line ({exc}); delete the file to answer every question again", path=out
        ) from None
    rows = _still_valid(saved, state["models"], prints, qset)
    if len(rows) != len(saved) or not _complete_lines(out):
        write_jsonl(out, rows)
    state["models"].update(prints)
    state.update(
        questions=qset.key,
        source=str(qset.source),
        is_split=_is_split(rundir, qset.source),
        question_ids=[str(q["id"]) for q in qset.rows],
    )
    state.pop("scored", None)
    atomic_write_json(rundir.eval_inputs(qset.name), state)
    return rows


def valid_answers(rundir: RunDir, qset: QuestionSet, prints: dict[str, str]) -> list[dict]:
    """The saved answers a rerun of the eval set keeps (`sync` without writing anything)."""
    state = _read_state(rundir.eval_inputs(qset.name))
    if state.get("questions") != qset.key:
        return []
    try:
        return _still_valid(read_jsonl(rundir.eval_generations(qset.name)), state["models"], prints, qset)
    except (OSError, ValueError):
        return []


def _still_valid(saved: list[dict], recorded: dict[str, str], prints: dict[str, str], qset: QuestionSet) -> list[dict]:
    """One row per model and question of the set, from models whose fingerprint is unchanged."""
    ids = {str(q["id"]) for q in qset.rows}
    seen: set[tuple[str, str]] = set()
    rows = []
    for row in saved:
        model, qid = str(row.get("model")), str(row.get("question_id"))
        made_by = recorded.get(model)
        if made_by is None or (model in prints and made_by != prints[model]):
            continue
        if qid in ids and (model, qid) not in seen:
            seen.add((model, qid))
            rows.append(row)
    return rows


def _is_split(rundir: RunDir, source: Path) -> bool:
    return Path(source).resolve() in (rundir.split_file(s).resolve() for s in SPLIT_SETS)


def scoring_key(models: list[str], config: Config) -> dict[str, Any]:
    return {"models": list(models), "bootstrap": config.eval.bootstrap, "bertscore": config.eval.bertscore}


def mark_scored(rundir: RunDir, name: str, models: list[str], config: Config) -> None:
    path = rundir.eval_inputs(name)
    state = _read_state(path)
    state["scored"] = scoring_key(models, config)
    atomic_write_json(path, state)


def is_current(run: Path, config: Config, name: str, questions: Path | None = None) -> bool:
    """True when RUN/eval/NAME holds scores for the current questions, models and settings.

    `questions` is the file the set is read from; without it, `test` means the run's test split (as in
    `evaluate`) and any other name the file recorded at its last eval."""
    rundir = RunDir(run)
    name = check_name(name, "eval set name")
    state = _read_state(rundir.eval_inputs(name))
    if questions is not None:
        source = Path(questions).expanduser().resolve()
    else:
        source = rundir.split_file(name) if name in SPLIT_SETS else Path(state.get("source") or "")
    if not state or not source.is_file() or not rundir.eval_scores(name).exists():
        return False
    try:
        models = wanted_models(rundir, config, name=name)
        prints = model_fingerprints(rundir, config, models)
    except (QatuneError, OSError):
        return False
    if state.get("questions") != questions_key(source, config, _is_split(rundir, source)):
        return False
    if any(state["models"].get(m) != p for m, p in prints.items()):
        return False
    if state.get("scored") != scoring_key(models, config):
        return False
    try:
        saved = read_jsonl(rundir.eval_generations(name))
    except ValueError:
        return False
    have = {(r.get("model"), str(r.get("question_id"))) for r in saved}
    return all((m, q) in have for m in models for q in state.get("question_ids", []))
