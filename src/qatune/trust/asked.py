"""The kind of fact a question's wording asks for, and whether an answer states one: "how many X?" asks for an
amount of X, "how much ...?" for an amount, "how long ...?" for a duration or a length (a unit of time or length,
or a span between two times or two dates). An answer that states no amount of X ("There are 6 homework
assignments." to "How many hours of homework a week?"), or no duration or length ("The proposal is due on October
6." to "How long should the proposal be?"), does not answer the question, however close its words are to it: it
answers another question on the same topic.

Self-contained with facts.py (the export bundles both with guard.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .facts import key_facts

_ASKED = re.compile(r"\bhow\s+(many|much|long)\b(.*)", re.I | re.S)
_WORD = re.compile(r"[^\W\d_]+|\d+(?:[.,:]\d+)*%?")
# Words that state an amount without a digit.
AMOUNT_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "dozen single couple both several few once twice half no none unlimited percent".split()
)
# A duration or a length ("how long").
UNITS = frozenset("second minute min hour hr day week month year semester term page word character line slide".split())
# Counted people: "how many people?" is answered by "3 members".
PEOPLE = frozenset("people person student member individual teammate participant folk".split())
# Words that end the counted thing: "how many hours of homework" counts hours.
_ENDS = frozenset(
    "of do does did is are was were will would should can could may might must per in for to i we you they the a an "
    "each every on at by from with that this be have has there it".split()
)


def _stem(word: str) -> str:
    """A word's singular, casefolded ("quizzes" -> "quiz", "hours" -> "hour", "credit-hours" -> as two words)."""
    w = word.casefold()
    for end, keep in (("zzes", "z"), ("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh")):
        if w.endswith(end) and len(w) - len(end) >= 2:
            return w[: -len(end)] + keep
    if w.endswith("s") and not w.endswith("ss") and len(w) >= 4:
        return w[:-1]
    return w


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


@dataclass(frozen=True)
class Asked:
    form: str  # "many", "much" or "long"
    counted: tuple[str, ...] = ()  # what "how many" counts, stemmed ("how many credit hours": credit, hour)


def asked_for(question: str) -> Asked | None:
    """What the question's wording asks for, or None when it does not say ("how many X", "how much", "how long")."""
    match = _ASKED.search(question)
    if match is None:
        return None
    form = match.group(1).casefold()
    if form != "many":
        return Asked(form)
    counted: list[str] = []
    for word in _words(match.group(2)):
        if word.casefold() in _ENDS or not word.isalpha():
            break
        counted.append(_stem(word))
        if len(counted) == 2:
            break
    return Asked(form, tuple(counted))


def _amount(words: list[str]) -> bool:
    return any(w[0].isdigit() or w.casefold() in AMOUNT_WORDS for w in words)


def _span(answer: str) -> bool:
    """Whether the answer states a span of time: two clock times or two dates ("from 10:00 to 11:50 am")."""
    kinds = [f.kind for f in key_facts(answer)]
    return kinds.count("time") >= 2 or kinds.count("date") >= 2


def states(asked: Asked, answer: str, answered: frozenset[str] = frozenset()) -> bool:
    """Whether `answer` states what `asked` asks for: an amount (of the counted thing), or a duration or length.
    `answered` (`answered_unnamed`): the counted things, and the forms, the training pairs answer otherwise."""
    if asked.form in answered or set(asked.counted) & answered:
        return True
    words = _words(answer)
    if asked.form == "long":
        return any(_stem(w) in UNITS for w in words) or _span(answer)
    if not _amount(words):
        return False
    if asked.form == "much" or not asked.counted:
        return True
    stems = {_stem(w) for w in words}
    return bool(set(asked.counted) & stems or (set(asked.counted) & PEOPLE and stems & PEOPLE))


def answered_unnamed(pairs: Iterable[dict]) -> frozenset[str]:
    """What the training pairs answer without stating it as `states` reads it: the counted things of a "how many"
    pair whose answer does not name them ("How many people on a team?" answered "3 members" makes any amount answer
    "people"), and "much" or "long" when such a pair's answer states no amount or no duration. The data's own
    answers show that such answers are answers, so the check accepts them."""
    found: set[str] = set()
    for pair in pairs:
        asked = asked_for(str(pair.get("question", "")))
        if asked is not None and not states(asked, str(pair["answer"])):
            found.update(asked.counted or (asked.form,))
    return frozenset(found)
