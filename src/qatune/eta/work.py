"""The work left in the training and eval stages, counted from the run directory (the prepared splits, the
checkpoint a training resumes from, the saved adapters) and the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qatune.console import QatuneError
from qatune.eta.estimate import EvalWork, TrainWork
from qatune.evaluate.budget import budget_for
from qatune.generate.engine import BASE
from qatune.rag import closed_book, grounded_name
from qatune.rag.baseline import RETRIEVAL
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

if TYPE_CHECKING:
    from qatune.config import Config

CHARS_PER_TOKEN = 4.0  # English in small chat models' vocabularies; the remembered token_scale corrects it
TEMPLATE_TOKENS = 32  # chat-template tokens around a pair (default system prompt, role headers)


def _chars(row: dict) -> int:
    return len(str(row.get("question", ""))) + len(str(row.get("answer", "")))


def train_work(rundir: RunDir, config: Config, resume: bool) -> TrainWork:
    """Training still to run, from the prepared splits (and the checkpoint it resumes from)."""
    from qatune.train import checkpoint
    from qatune.train.recall import RECALL_KINDS

    tc = config.train
    rows = read_jsonl(rundir.split_file("train"))
    tokens = [min(tc.max_length, TEMPLATE_TOKENS + _chars(r) / CHARS_PER_TOKEN) for r in rows]
    if tc.grounded and rows:  # a share of the original pairs once more, with rag_k retrieved pairs in the prompt
        context = tc.rag_k * (sum(map(_chars, rows)) / len(rows) + 8) + 30
        originals = [r for r in rows if not r.get("augmented_from")]
        grounded = [min(tc.max_length, TEMPLATE_TOKENS + (_chars(r) + context) / CHARS_PER_TOKEN) for r in originals]
        tokens.append(tc.grounded_share * sum(grounded))
    runs = list(tc.epochs) if tc.sweep == "independent" else [max(tc.epochs)]
    last = checkpoint.latest(rundir.checkpoints_dir) if resume else None
    progress = checkpoint.read_progress(last) if last is not None else {}
    epochs = sum(runs[int(progress.get("run_index", 0)) :]) - (int(progress.get("epoch", 1)) - 1)
    recall = [r for r in read_jsonl(rundir.split_file("val")) if r.get("kind") in RECALL_KINDS]
    return TrainWork(
        epoch_tokens=sum(tokens),
        epochs=max(0, epochs),
        recall_questions=len(recall),
        saves=max(0, len(tc.epochs) - len(progress.get("saved", []))),
        resumed=bool(progress),
    )


def eval_work(rundir: RunDir, config: Config, questions: Path | None, name: str, trained: bool) -> EvalWork:
    """An eval set's generated answers: the models `evaluate` will score (predicted from the config while the
    adapters are still to be trained) x the set's questions."""
    if questions is None:
        rows = read_jsonl(rundir.split_file(name))
    else:
        from qatune.data.prepare import load_questions

        try:
            rows = load_questions(Path(questions).expanduser().resolve(), config)
        except (QatuneError, OSError):
            rows = []  # the eval stage says what is wrong with the file
    tokens = [len(str(r.get("answer", ""))) / CHARS_PER_TOKEN + 1 for r in rows]
    models, epochs = _eval_models(rundir, config, trained)
    generated = [m for m in models if m != RETRIEVAL and not _copied(m, models, epochs)]
    return EvalWork(
        answers={m: len(rows) for m in generated},
        answer_tokens=sum(tokens) / max(len(tokens), 1),
        max_new_tokens=_budget(rundir, config),
    )


def _budget(rundir: RunDir, config: Config) -> int:
    """The eval's max_new_tokens; `auto` estimated from the trained answers' length in characters."""

    def longest(train: str) -> int:
        return round(max((len(str(r.get("answer", ""))) for r in read_jsonl(Path(train))), default=0) / CHARS_PER_TOKEN)

    return budget_for(rundir, config, longest)


def _eval_models(rundir: RunDir, config: Config, trained: bool) -> tuple[list[str], list[str]]:
    """The models `evaluate` scores and the saved epochs; before training, those the config will give."""
    if trained:
        from qatune.evaluate.state import wanted_models

        return wanted_models(rundir, config), [n for n in rundir.adapter_names() if n != "best"]
    epochs = [f"epoch-{e}" for e in config.train.epochs]
    if config.eval.models is not None:
        return list(dict.fromkeys([BASE, *config.eval.models])), epochs
    grounded = config.train.grounded or rundir.has_index
    rag = [grounded_name(BASE), grounded_name("best")] if grounded else []
    return [BASE, RETRIEVAL, *epochs, "best", *rag], epochs


def _copied(model: str, models: list[str], epochs: list[str]) -> bool:
    """`best` has the weights of a saved epoch: its answers are copied when every epoch is scored alongside."""
    suffix = model[len(closed_book(model)) :]
    return closed_book(model) == "best" and bool(epochs) and all(e + suffix in models for e in epochs)
