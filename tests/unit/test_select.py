"""Grounded answers chosen among the retrieved ones (generate/select.py): the choice rule, when a run chooses, and a
choosing engine's answers (whole retrieved answers, the same from generate, stream and reference scoring)."""

from __future__ import annotations

import pytest
import yaml

from adapter_runs import make_run
from qatune.config import load_for_run
from qatune.generate import load_engine
from qatune.generate.select import LONG_ANSWER, long_answers, pick, selects
from qatune.prompts import messages_for
from qatune.rag.prompt import grounded_question
from qatune.rundir import RunDir
from qatune.storage import write_jsonl

PAIRS = [
    ("Who teaches the course?", "Professor Ada Lovelace teaches it, with two teaching assistants."),
    ("How is the grade computed?", "Homework 40%, midterm 20%, final project 40%."),
    ("What is the course title?", "Deep Learning for Everyone."),
    ("When is the final project due?", "On the last Friday of term, at noon."),
]
QUESTIONS = ["Who is teaching this course?", "How are grades computed?", "When is the project due?"]


def test_the_choice_is_the_answer_the_question_makes_likelier_not_the_likeliest():
    # "generic" is likelier with the question (1.0 < 1.5) but just as likely without it: "specific" gains more
    assert pick([1.0, 1.5], [1.1, 2.5]) == 1
    assert pick([1.0, 1.5], [0.0, 0.0]) == 0  # zeros without the question: plain likelihood
    assert pick([None, None], [None, None]) == 0  # nothing scored (a prompt too long): the first pair
    assert pick([2.0, 2.0], [1.0, 1.0]) == 0  # a tie goes to the earlier pair
    assert pick([None, 3.0], [None, 1.0]) == 1  # only scored pairs compete


def test_answers_are_long_from_a_median_over_256_characters():
    assert not long_answers([]) and not long_answers([LONG_ANSWER] * 3)
    assert long_answers([10, LONG_ANSWER + 1, 900]) and not long_answers([10, 20, 900])


@pytest.mark.parametrize(
    ("setting", "answer", "expected"),
    [("auto", "x" * 300, True), ("auto", "short", False), ("on", "short", True), ("off", "x" * 300, False)],
)
def test_a_run_chooses_as_set_or_on_long_training_answers(tmp_path, setting, answer, expected):
    rundir = RunDir(tmp_path / "run")
    rows = [{"id": f"p{i}", "question": f"q{i}", "answer": answer} for i in range(3)]
    rows.append({"id": "p0-aug1", "question": "q0?", "answer": answer, "augmented_from": "p0"})
    write_jsonl(rundir.split_file("train"), rows)
    config = load_for_run(tmp_path / "none", None, {"abstain": {"select": setting}}, save=False)
    assert selects(rundir, config) is expected


@pytest.fixture(scope="module")
def choosing(tmp_path_factory, lively_model_dir):
    """A run with an index whose config sets `abstain.select: on`, and its engine."""
    from qatune.rag.embeddings import load_embedder
    from qatune.rag.index import run_index

    run = make_run(tmp_path_factory.mktemp("choose") / "run", lively_model_dir)
    rundir = RunDir(run)
    config = yaml.safe_load(rundir.config_yaml.read_text())
    config["abstain"]["select"] = "on"
    rundir.config_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    write_jsonl(
        rundir.split_file("train"), [{"id": f"p{i}", "question": q, "answer": a} for i, (q, a) in enumerate(PAIRS)]
    )
    run_index(rundir, load_embedder(), k=2)
    return run, load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])


def test_a_choosing_engine_answers_grounded_with_a_whole_retrieved_answer(choosing):
    run, engine = choosing
    assert engine.chooses("epoch-1+rag") and not engine.chooses("epoch-1") and not engine.chooses("base+rag", 0.7)
    convs = [messages_for(q) for q in QUESTIONS]
    gens = engine.generate("epoch-1+rag", convs, references=[a for _, a in PAIRS[:3]])
    contexts = engine.retriever.contexts(QUESTIONS)
    for g, ctx in zip(gens, contexts, strict=True):
        assert g.text in [p["answer"] for p in ctx] and g.stopped and g.reference_nll > 0
    streamed = ["".join(engine.stream("epoch-1+rag", conv)) for conv in convs]
    assert streamed == [g.text for g in gens]
    written = engine.generate("epoch-1", convs, max_new_tokens=6)  # closed-book models still write
    assert all(g.new_tokens > 0 for g in written)


def test_choices_and_reference_nll_equal_scoring_each_prompt_alone(choosing):
    """The two prompts of a choice (with and without the question) share the retrieved pairs' cache; the choice
    and the reference's NLL are what scoring every prompt on its own, unshared, gives."""
    from qatune.generate.select import NO_QUESTION

    _, engine = choosing
    references = [a for _, a in PAIRS[:3]]
    gens = engine.generate("epoch-1+rag", [messages_for(q) for q in QUESTIONS], references=references)
    for g, q, ctx, ref in zip(gens, QUESTIONS, engine.retriever.contexts(QUESTIONS), references, strict=True):
        answers = [p["answer"] for p in ctx]
        asked = engine._nll("epoch-1", [grounded_question(q, ctx)] * len(ctx), answers)
        anyway = engine._nll("epoch-1", [grounded_question(NO_QUESTION, ctx)] * len(ctx), answers)
        assert g.text == answers[pick(asked, anyway)]
        (alone,) = engine._nll("epoch-1", [grounded_question(q, ctx)], [ref])
        assert g.reference_nll == pytest.approx(alone, abs=1e-3)


class _Clock:
    """Records what the eval stage reports to the run's clock, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[set[str], bool, float]] = []

    def answered(self, rows: list[dict], seconds: float = 0.0, chosen: bool = False) -> None:
        self.batches.append(({r["model"] for r in rows}, chosen, seconds))

    def live_line(self) -> None:
        return None


def test_eval_tells_the_clock_which_batches_were_chosen(choosing):
    """The run's time estimate prices a chosen answer by its prompt passes, not by generated tokens: eval reports
    the choosing model's batches (and their seconds) apart from the written ones."""
    from qatune.evaluate.answer import evaluate

    run, _ = choosing
    write_jsonl(
        RunDir(run).split_file("test"),
        [
            {"id": f"t{i}", "question": q, "answer": a}
            for i, (q, a) in enumerate(zip(QUESTIONS, [a for _, a in PAIRS[:3]], strict=True))
        ],
    )
    config = load_for_run(run, None, {"eval": {"models": ["epoch-1", "epoch-1+rag"]}}, save=False)
    clock = _Clock()
    evaluate(run, config, clock=clock)
    kinds = {(tuple(sorted(models)), chosen) for models, chosen, _ in clock.batches}
    assert (("epoch-1+rag",), True) in kinds and (("epoch-1",), False) in kinds
    assert all(seconds > 0 for _, _, seconds in clock.batches)
