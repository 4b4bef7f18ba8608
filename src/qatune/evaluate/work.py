"""The answers an eval set still has to generate, for the run's clock (qatune.eta): the models `evaluate` will score,
less those whose weights are another's (their answers are copied) and the answers in RUN/eval/NAME that are still
valid; priced by the machine's rates (answer lengths by kind of model), updated from what a finished set measured.
Reads only; writes nothing."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from qatune.console import QatuneError
from qatune.eta.estimate import CHARS_PER_TOKEN, Measured, Rates, Work, answer_tokens, blend
from qatune.evaluate.answer import copies, load_question_set
from qatune.evaluate.budget import answer_budget
from qatune.evaluate.rows import answerable
from qatune.evaluate.state import is_current, model_fingerprints, valid_answers, wanted_models
from qatune.generate import BASE
from qatune.generate.budget import fitted_budget
from qatune.generate.select import selects
from qatune.rag import closed_book, grounded_name, is_grounded
from qatune.rag.baseline import RETRIEVAL
from qatune.rag.prompt import CUT_MARK
from qatune.rundir import RunDir
from qatune.train.leads import trains_leads
from qatune.trust.run import trained_refusal

if TYPE_CHECKING:
    from qatune.config import Config


MIN_CHOSEN = 5  # chosen answers that ran the model before their time is measured


@dataclass(frozen=True)
class EvalWork(Work):
    answers: dict[str, int]  # model -> questions it still generates answers for (copies and retrieval are cheap)
    answer_tokens: float  # mean reference answer length, in tokens estimated from characters
    max_new_tokens: int
    fitted_tokens: float | None = None  # mean budget base and grounded answers get from their retrieved answers
    chosen: frozenset[str] = frozenset()  # models that choose a retrieved answer (generate.select) instead
    choice_tokens: float = 0.0  # prompt tokens a chosen answer runs through (pairs once, with and without question)
    references: bool = True  # the set has reference answers (a set of unanswerable questions has none)
    refusal_tokens: float = 0.0  # the trained refusal: a fine-tuned model's answer where the data is silent
    lead_tokens: float | None = None  # mean reference lead, where closed-book models are trained to answer leads

    def expected(self, model: str, rates: Rates) -> float:
        """New tokens per answer: the base model runs on to its budget (fitted to the retrieved answers in a run
        with an index), a fine-tuned one stops near the reference length (grounded: or where it starts copying;
        closed-book: near the reference's lead where it was trained on leads); a chosen answer generates none.
        Where the set's questions are unanswerable, `asked` discounts grounded answers the guard gives before any
        pass (the retrieval fallback, the question check)."""
        if model in self.chosen:
            return 0.0
        if not self.references and self.refusal_tokens and closed_book(model) != BASE:
            return self.refusal_tokens  # trained to abstain on questions the data does not answer
        budget = self.fitted_tokens or float(self.max_new_tokens)
        if model == BASE and rates.base_tokens > 0:
            return min(budget, rates.base_tokens)  # its own length, which hardly depends on the data
        if closed_book(model) == BASE:
            return (rates.rag_fill if is_grounded(model) else rates.base_fill) * budget
        if is_grounded(model):
            return min(budget, rates.rag_tuned_ratio * self.answer_tokens)
        return min(budget, rates.tuned_ratio * (self.lead_tokens or self.answer_tokens))

    def choice_seconds(self, rates: Rates) -> float:
        """One chosen answer: its prompt tokens, priced as trained tokens times the machine's ratio."""
        return self.choice_tokens * rates.choose_train_ratio / rates.train_tokens_per_s

    def asked(self, model: str, rates: Rates) -> float:
        """The share of `model`'s answers that run the model: grounded answers to unanswerable questions often
        end before any pass (`unasked_share`, measured on such sets)."""
        return 1.0 - rates.unasked_share if not self.references and is_grounded(model) else 1.0

    def left(self, rates: Rates, m: Measured, elapsed: float) -> float:
        todo = {k: max(0, n - m.answers.get(k, 0)) * self.asked(k, rates) for k, n in self.answers.items()}
        tokens = sum(n * self.expected(k, rates) for k, n in todo.items())
        choices = sum(n for k, n in todo.items() if k in self.chosen)
        written = blend(rates.eval_s_per_token, max(0.0, elapsed - m.chosen_seconds), m.tokens)
        return tokens * written + choices * self.choice_seconds(rates)

    def learned(self, rates: Rates, m: Measured, seconds: float, rundir: RunDir) -> Rates:
        """Seconds per generated token, how long each kind of model's answers ran, and what a chosen answer
        cost against a trained token."""
        new: dict[str, float] = {}
        if m.chosen >= MIN_CHOSEN and m.chosen_seconds > 0 and self.choice_tokens > 0:
            per_answer = m.chosen_seconds / m.chosen
            new["choose_train_ratio"] = per_answer * rates.train_tokens_per_s / self.choice_tokens
        if m.tokens < 50:
            return replace(rates, **new)  # too little generated to measure the rest
        new["eval_s_per_token"] = max(seconds - m.chosen_seconds, 0.0) / m.tokens
        base = m.answers.get(BASE, 0) - m.unasked.get(BASE, 0)
        if base > 0:  # the base model knows no set from another: its length is learned from any
            new["base_tokens"] = m.new_tokens.get(BASE, 0) / base
        if not self.references:
            grounded = [k for k in m.answers if is_grounded(k)]
            answers = sum(m.answers[k] for k in grounded)
            if answers > 0:
                new["unasked_share"] = sum(m.unasked.get(k, 0) for k in grounded) / answers
            return replace(rates, **new)  # questions the data does not answer say nothing of answer lengths
        kinds: dict[str, list[str]] = {"base_fill": [BASE], "rag_fill": [grounded_name(BASE)]}
        tuned = [k for k in m.answers if closed_book(k) != BASE]
        kinds["tuned_ratio"] = [k for k in tuned if not is_grounded(k)]
        kinds["rag_tuned_ratio"] = [k for k in tuned if is_grounded(k)]
        for name, models in kinds.items():
            models = [k for k in models if k not in self.chosen]
            answers = sum(m.answers.get(k, 0) - m.unasked.get(k, 0) for k in models)  # that ran the model
            if answers > 0:
                mean = sum(m.new_tokens.get(k, 0) for k in models) / answers
                fills = self.fitted_tokens or self.max_new_tokens
                scale = self.answer_tokens if name.endswith("tuned_ratio") else fills
                scale = (self.lead_tokens or scale) if name == "tuned_ratio" else scale
                new[name] = max(mean / max(scale, 1e-9), 0.01)
        return replace(rates, **new)


def work_left(
    run: Path, config: Config, name: str, questions: Path | None = None, adapters: list[str] | None = None
) -> EvalWork | None:
    """What `evaluate` would still generate for the set; None when its scores are current (`is_current`).

    `adapters`: those a training still to run will save. Their weights are unknown, so `best` (which is one of the
    epochs) counts as a copy when every epoch is scored alongside it."""
    rundir = RunDir(run)
    if adapters is None and is_current(run, config, name, questions):
        return None
    try:
        qset = load_question_set(rundir, config, questions, name)
    except (QatuneError, OSError):
        qset = None  # the eval stage says what is wrong with the file
    models = wanted_models(rundir, config, adapters, name)
    if adapters is None:
        prints = model_fingerprints(rundir, config, models)
        copied, saved = set(copies(prints)), valid_answers(rundir, qset, prints) if qset else []
    else:
        epochs = [a for a in adapters if a != "best"]
        best = [m for m in models if closed_book(m) == "best"]
        copied = {m for m in best if epochs and all(e + m.removeprefix("best") in models for e in epochs)}
        saved = []
    rows, done = (qset.rows if qset else []), Counter(str(r.get("model")) for r in saved)
    trained = [r for r in _rows(rundir.split_file("train")) if not r.get("augmented_from")]
    typical = sum(_answer(r) for r in trained) / max(len(trained), 1)  # a trained answer, in tokens
    head = config.train.answer_head + len(CUT_MARK) / CHARS_PER_TOKEN if config.train.answer_head else math.inf
    shown = sum(min(_answer(r), head) for r in trained) / max(len(trained), 1)  # as a grounded prompt shows it
    lengths = [_answer(r) if answerable(r) else typical for r in rows]  # no reference: a trained answer's
    budget = answer_budget(rundir, config)
    indexed = rundir.has_index or (adapters is not None and config.train.grounded)
    fitted = [min(budget, fitted_budget(math.ceil(max(n, typical)))) for n in lengths]  # the longer of two answers
    answers = {m: len(rows) - done[m] for m in models if m != RETRIEVAL and m not in copied}
    chosen = frozenset(m for m in answers if is_grounded(m)) if indexed and selects(rundir, config) else frozenset()
    question = sum(len(str(r.get("question", ""))) / CHARS_PER_TOKEN for r in rows) / max(len(rows), 1)
    lead = config.train.answer_head + 1 if trains_leads(config.train, trained) else None  # and its end-of-turn
    return EvalWork(
        answers=answers,
        answer_tokens=sum(lengths) / max(len(lengths), 1),
        max_new_tokens=budget,
        fitted_tokens=sum(fitted) / len(fitted) if indexed and fitted else None,
        chosen=chosen,
        choice_tokens=config.train.rag_k * shown + 2 * question if chosen else 0.0,  # pairs once, question or none
        references=any(map(answerable, rows)),
        refusal_tokens=answer_tokens(trained_refusal(rundir, config)) if config.train.refusal_examples else 0.0,
        lead_tokens=sum(min(n, lead) for n in lengths) / max(len(lengths), 1) if lead else None,
    )


def _answer(row: dict) -> float:
    return answer_tokens(str(row.get("answer", "")))


def _rows(path: Path) -> list[dict]:
    from qatune.storage import read_jsonl

    return read_jsonl(path) if path.exists() else []
