"""Key facts: each format of one fact compares equal, and the per-answer check finds the reference's facts and
the invented ones. The pairs are from the two public sets and their models' answers, checked by hand."""

from __future__ import annotations

import pytest

from qatune.trust.facts import check_facts, key_facts, unknown_facts


def _values(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.value) for f in key_facts(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Lectures meet on Tuesdays from 2:00 pm to 4:45 pm.",
            [("weekday", "tuesday"), ("time", "14:00"), ("time", "16:45")],
        ),
        ("The lectures are on Tuesdays, 2:00-4:45 pm.", [("weekday", "tuesday"), ("time", "14:00"), ("time", "16:45")]),
        (
            "Yes, a lab section meets on Fridays from 10:00 to 11:50 am.",
            [("weekday", "friday"), ("time", "10:00"), ("time", "11:50")],
        ),
        ("It runs from 11:00 to 1:00 pm.", [("time", "11:00"), ("time", "13:00")]),
        ("Homework is due on Sundays at 11:59 pm.", [("weekday", "sunday"), ("time", "23:59")]),
        ("The penalty is applied at midnight.", [("time", "0:00")]),
        ("The contact number is (631) 632-6748.", [("phone", "6316326748")]),
        ("Call +1 631-632-6748 today.", [("phone", "6316326748")]),
        ("The email address is sasc@stonybrook.edu.", [("email", "sasc@stonybrook.edu")]),
        (
            "See http://www.stonybrook.edu/commcms/academic_integrity/index.html.",
            [("url", "stonybrook.edu/commcms/academic_integrity/index.html")],
        ),
        ("Gradient descent is discussed on 09/05.", [("date", "9-5")]),
        (
            "The midterm is on Tuesday, October 20, 2026, during class.",
            [("weekday", "tuesday"), ("date", "10-20"), ("number", "2026")],
        ),
        ("It is due 20 Oct 2026.", [("date", "10-20"), ("number", "2026")]),
        ("Quizzes contribute 10% to the overall grade.", [("percent", "10")]),
        ("Quizzes contribute 10 percent to the grade.", [("percent", "10")]),
        (
            "The course is DSC 310 — Applied Machine Learning.",
            [("code", "DSC310"), ("name", "applied machine learning")],
        ),
        ("Final project teams have three students.", [("number", "3")]),
        ("Marcus Lindqvist holds office hours.", [("name", "marcus lindqvist")]),
        ("DSC 310 is taught by Prof. Imani Okafor.", [("code", "DSC310"), ("name", "imani okafor")]),
        ("The fee is $1,250.", [("money", "$1250")]),
        ("Yes, attendance is mandatory.", []),
        ("I'm sorry, I'm not sure. I'll check.", []),  # the pronoun is no name, wherever it stands
    ],
)
def test_each_kind_of_fact_is_found_and_normalised(text, expected):
    assert _values(text) == expected


def test_two_wordings_of_the_same_facts_state_nothing_wrong():
    check = check_facts(
        "Lectures meet on Tuesdays from 2:00 pm to 4:45 pm.", "The lectures are on Tuesdays, 2:00-4:45 pm."
    )
    assert check.recall == 1.0 and check.wrong == []
    check = check_facts("Quizzes are worth 10 percent of the grade.", "Quizzes contribute 10% to the overall grade.")
    assert check.recall == 1.0 and check.wrong == []


def test_the_wrong_name_is_a_wrong_fact_although_rouge_scores_it_high():
    answer = "Prof. Lindqvist holds office hours on Wednesdays from 1:00 to 3:00 pm."
    reference = "Prof. Okafor holds office hours on Wednesdays from 1:00 to 3:00 pm."
    check = check_facts(answer, reference, "When are the office hours?")
    assert [f.value for f in check.wrong] == ["lindqvist"]
    assert check.recall == pytest.approx(3 / 4)  # the day and both times, not the name


def test_a_shorter_name_of_the_same_person_is_not_wrong():
    check = check_facts("Prof. Okafor teaches it.", "DSC 310 is taught by Prof. Imani Okafor.")
    assert check.wrong == []
    assert check.recall == pytest.approx(1 / 2)  # the name, not the course code


def test_facts_from_the_question_are_not_wrong():
    check = check_facts("DSC 310 has no final exam.", "No, there is no final exam.", "Does DSC 310 have a final exam?")
    assert check.wrong == []
    assert check.recall is None  # the reference states no key fact


def test_invented_date_time_and_phone_are_wrong():
    check = check_facts(
        "The instructor answers at (555) 123-4567 on November 16 at 9:00 am.",
        "Put [DSC310] in the subject line; emails are answered within 2 business days.",
    )
    assert {f.kind for f in check.wrong} == {"phone", "date", "time"}
    assert check.recall == 0.0


def test_a_time_without_am_pm_matches_either_half_of_the_day():
    assert check_facts("It starts at 2:00.", "It starts at 2:00 pm.").wrong == []
    assert [f.value for f in check_facts("It starts at 3:00.", "It starts at 2:00 pm.").wrong] == ["3:00~"]


def test_a_sentence_opening_word_is_not_a_name_but_a_mid_sentence_one_is():
    assert _values("Transformers are covered on 10/24.") == [("date", "10-24")]
    assert _values("Slides are posted on Canvas.") == [("name", "canvas")]


def test_unknown_facts_are_those_no_training_pair_states():
    known = key_facts("Prof. Okafor holds office hours on Wednesdays from 1:00 to 3:00 pm in Whitfield Hall 330.")
    assert unknown_facts("Prof. Okafor is in Whitfield Hall 330 on Wednesdays.", known) == []
    assert [f.value for f in unknown_facts("Call Prof. Okafor at 555-123-4567.", known)] == ["5551234567"]
