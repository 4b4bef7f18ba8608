"""What makes a question one the data cannot answer, whatever a model would say: a specific (code, date, numbered
item, titled name) no training pair mentions, or a kind of fact (phone number, e-mail, web address, price) no
training answer holds. Self-contained with facts.py (relative imports): the export bundles both."""

from __future__ import annotations

import re

from .facts import Fact, key_facts, supports

# What a question asks for, when it asks for a kind of fact: a data set whose answers hold none cannot answer it.
ASKS_FOR = {
    "phone": re.compile(r"\b(?:phone|telephone|mobile|cell)(?:\s+number)?\b|\bnumber to call\b", re.I),
    "email": re.compile(r"\be-?mail address(?:es)?\b|\bemail of\b|\bwhat(?:'s| is) .{0,40}\be-?mail\b\s*\??$", re.I),
    "url": re.compile(r"\b(?:website|web site|web page|webpage|url|link)\b", re.I),
    "money": re.compile(r"\bhow much does .{0,60}\bcost\b|\b(?:price|fee|fees|tuition|cost)\b", re.I),
}
# Specifics in a question that tie it to one thing: when the data never mentions them, it does not answer it.
_LABEL = re.compile(r"\b([A-Za-z]+)\s+(\d{1,4})\b")
_LABEL_WORDS = frozenset(
    "week weeks quiz quizzes homework assignment assignments lab labs lecture lectures chapter chapters unit units "
    "module modules section sections exam exams test tests problem problems set sets project part step level version "
    "session sessions day room floor building semester term grade year class fall spring summer winter".split()
)
_TITLED = re.compile(r"\b(?:Prof\.?|Professor|Dr\.?|Mr\.?|Mrs\.?|Ms\.?)\s+([A-Z][\w-]+)")


def _labelled(word: str, number: int, text: str) -> bool:
    """Whether `text` names item `number` of `word`: "week 5", "weeks 4, 5", "weeks 3 to 6"."""
    stem = re.escape(word.casefold().rstrip("s"))
    items = r"((?:\d+\s*(?:,|and|or|to|through|-|–)\s*)*\d+)"
    for match in re.finditer(rf"\b{stem}(?:s|zes|es)?\s+{items}", text, re.I):
        listed = match.group(1)
        if number in (int(n) for n in re.findall(r"\d+", listed)):
            return True
        for lo, hi in re.findall(r"(\d+)\s*(?:to|through|-|–)\s*(\d+)", listed):
            if int(lo) <= number <= int(hi):
                return True
    return False


def question_gaps(question: str, known: list[Fact], answer_kinds: set[str], data_text: str = "") -> list[str]:
    """Why the data cannot answer `question`, as short reasons (empty: it may): a code, date, numbered item
    ("week 5", "quiz 3": the data's text, `data_text`, never names it) or titled name that no training pair
    mentions, or a kind of fact asked for (a phone number, e-mail address, web address, price) that no training
    answer holds."""
    gaps = []
    for fact in key_facts(question):
        if fact.kind in ("code", "date", "email", "url", "phone") and not supports(fact, known):
            gaps.append(f"{fact.kind} {fact.text.rstrip('.,?!')}")
    for word, number in _LABEL.findall(question):
        if word.casefold() in _LABEL_WORDS and not _labelled(word, int(number), data_text):
            gaps.append(f"{word} {number}")
    for name in _TITLED.findall(question):
        if not supports(Fact("name", name.casefold(), name), [f for f in known if f.kind == "name"]):
            gaps.append(f"name {name}")
    for kind, pattern in ASKS_FOR.items():
        if kind not in answer_kinds and pattern.search(question):
            gaps.append(f"asks for a {kind}")
    return list(dict.fromkeys(gaps))
