"""The kind check: an answer to "how many X", "how much" or "how long" that states no amount of X, no amount or no
duration answers another question; a grounded model's is shown as the retrieved answer that states one, else
refused, everywhere a model answers (trust.guard.after)."""

from __future__ import annotations

import pytest

from qatune.trust.asked import Asked, answered_unnamed, asked_for, states
from qatune.trust.guard import FACT_CHECK, KIND_CHECK, Guard, after
from qatune.trust.refusal import REFUSALS

EN = REFUSALS["en"]


@pytest.mark.parametrize(
    ("question", "asked"),
    [
        ("How many credit hours does the course carry?", Asked("many", ("credit", "hour"))),
        ("How many hours of homework should I expect each week?", Asked("many", ("hour",))),
        ("Hi, how many quizzes are dropped?", Asked("many", ("quiz",))),
        ("How much does the final project count?", Asked("much")),
        ("How long should the project proposal be?", Asked("long")),
        ("Who teaches DSC 310?", None),
        ("When is the exam? It is long.", None),
    ],
)
def test_the_kind_asked_is_read_from_the_questions_wording(question, asked):
    assert asked_for(question) == asked


@pytest.mark.parametrize(
    ("question", "answer", "answers"),
    [
        # hand-checked on the example syllabus
        ("How many credit hours does the course carry?", "DSC 310 is a 4-credit course.", True),
        ("How many credit hours does the course carry?", "The course code is DSC 310.", False),  # no amount of credit
        ("How many homework sets will be assigned?", "There are 6 homework assignments.", True),
        ("How many homework sets will be assigned?", "Only the best 6 of the 8 quiz scores count.", False),
        ("How many hours of homework should I expect each week?", "There are 6 homework assignments.", False),
        ("How many points is each homework worth?", "Homework counts for 30% of the final grade.", False),
        ("How many late days do I get?", "You get three free late days.", True),  # a number word
        ("How many people are on a project team?", "Each project team has 3 members.", True),  # counted people
        ("How many quizzes are dropped?", "No quizzes are dropped.", True),
        ("How much does the final project count?", "The final project is worth 30% of the grade.", True),
        ("How much does the final project count?", "The final project is a team project.", False),
        ("How long is the midterm?", "The midterm lasts 75 minutes.", True),
        ("How long should the report be?", "At most ten pages.", True),
        ("How long should the project proposal be?", "The project proposal is due on Tuesday, October 6.", False),
        ("How long is the Friday lab?", "The lab meets on Fridays from 10:00 to 11:50 am.", True),  # a span of times
        ("How long is the semester?", "It runs from August 24 to December 11, 2026.", True),  # a span of dates
        ("How long is the final exam?", "The final exam is on December 14, 2026, at 8:00 am.", False),  # a moment
    ],
)
def test_an_answer_states_the_kind_of_fact_asked_for(question, answer, answers):
    assert states(asked_for(question), answer) is answers


def test_the_datas_own_pairs_say_which_answers_answer():
    """A "how many" pair whose own answer names no amount of what it counts makes any amount answer that; a "how
    long" pair answered without a unit turns the "how long" reading off for the data."""
    pairs = [
        {"question": "How many sections are there?", "answer": "There are three: A, B and C."},
        {"question": "How long is the course?", "answer": "From September to December."},
        {"question": "How many quizzes are there?", "answer": "There are 8 quizzes."},
    ]
    answered = answered_unnamed(pairs)
    assert answered == {"section", "long"}
    assert states(asked_for("How many sections meet on Fridays?"), "Two meet on Fridays.", answered)
    assert states(asked_for("How long is the lab?"), "Until noon.", answered)
    assert not states(asked_for("How many quizzes are there?"), "Quizzes are on Fridays.", answered)


PAIRS = [
    {"question": "How many homework assignments are there?", "answer": "There are 6 homework assignments."},
    {"question": "How are quizzes counted?", "answer": "Only the best 6 of the 8 quiz scores count."},
    {"question": "When is the proposal due?", "answer": "The project proposal is due on Tuesday, October 6."},
]


def test_a_grounded_answer_from_the_wrong_pair_is_shown_as_the_retrieved_one_that_states_the_amount():
    guard = Guard.from_pairs(EN, PAIRS, quote=0.5)
    question = "How many homework sets will be assigned?"
    shown = after(guard, PAIRS[1]["answer"], question, tuned=True, pairs=[PAIRS[1], PAIRS[0]], question=question)
    assert not shown.abstained and shown.quoted and shown.text == PAIRS[0]["answer"]
    assert shown.raw == PAIRS[1]["answer"]


def test_an_answer_that_states_no_fact_of_the_kind_asked_is_refused_and_base_is_not_checked():
    guard = Guard.from_pairs(EN, PAIRS, quote=0.5)
    question = "How long should the project proposal be?"
    quoted = "The project proposal is due on Tuesday, October 6, 2026."  # close to the retrieved answer: quoted
    refused = after(guard, quoted, question, tuned=True, pairs=PAIRS[2:], question=question)
    assert refused.abstained and refused.by == KIND_CHECK and refused.text == EN
    assert refused.raw == quoted and refused.unknown == ("states no duration or length",)
    closed = after(guard, "There are 6 homework assignments.", "How many hours of homework a week?", tuned=True)
    assert closed.by == KIND_CHECK and closed.unknown == ("states no amount of hour",)
    assert not after(guard, quoted, question, tuned=False, pairs=PAIRS[2:], question=question).abstained  # base
    off = Guard.from_pairs(EN, PAIRS, quote=0.5, check_facts=False)  # switched with the fact check
    assert not after(off, quoted, question, tuned=True, pairs=PAIRS[2:], question=question).abstained
    invented = after(guard, "It takes 9 hours.", "How many hours?", tuned=True)
    assert invented.by == FACT_CHECK  # a fact no pair holds is refused first, by the fact check


def test_the_kind_check_changes_the_fingerprint_saved_answers_are_kept_under():
    from qatune.trust.guard import KINDS_ASKED

    on = Guard.from_pairs(EN, PAIRS).fingerprint()
    off = Guard.from_pairs(EN, PAIRS, check_facts=False).fingerprint()
    assert KINDS_ASKED in on and KINDS_ASKED not in off
