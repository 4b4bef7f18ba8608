"""Key facts of an answer (numbers, percentages, times, dates, weekdays, phone numbers, e-mail addresses, URLs,
codes such as DSC 310, and capitalised names), normalised so that two spellings of one fact compare equal, and
the per-answer scores built on them: which of the reference's facts the answer states (recall) and which facts it
states that neither the reference nor the question holds (wrong facts). Pure functions; docs/trust.md says what
they catch and what they miss."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# "one" is left out: in answers it is mostly a pronoun ("the lowest one").
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
    if w != "_"
} | {"thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "dozen": 12}
TITLES = {"prof", "professor", "dr", "mr", "mrs", "ms", "mx", "sir", "dame"}
# Capitalised words that begin sentences or answers without naming anything.
PLAIN_WORDS = frozenset(
    """a an the yes no it its this that these those there their they them he she his her we our you your i
    each every all any some most many only one both either neither not no none students student faculty
    in on at by for from to of and or but if when where what which who whom why how after before during
    please note also however then so because while with without within i'm i've i'll i'd""".split()
)
CONNECTORS = frozenset({"of", "and", "for", "the", "de", "da", "van", "von", "der", "del", "la", "le", "with", "&"})

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?"
_MERIDIEM = r"(?:a\.?m\.?|p\.?m\.?)"
_CLOCK = rf"(?:\d{{1,2}}(?::\d{{2}})?\s*{_MERIDIEM}|\d{{1,2}}:\d{{2}}|noon|midnight)"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("url", re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.I)),
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("phone", re.compile(r"(?<![\w/])(?:\+?\d{1,2}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b")),
    ("timerange", re.compile(rf"\b{_CLOCK}\s*(?:-|–|—|to|until|till)\s*{_CLOCK}", re.I)),
    ("time", re.compile(rf"\b{_CLOCK}", re.I)),
    (
        "date",
        re.compile(
            rf"\b(?:(?:{_MONTH})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
            rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTH})\b\.?(?:,?\s+\d{{4}})?"
            r"|\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}(?:/\d{2,4})?)\b",
            re.I,
        ),
    ),
    ("weekday", re.compile(rf"\b{_WEEKDAY}\b", re.I)),
    ("percent", re.compile(r"\b\d+(?:\.\d+)?\s*(?:%|percent\b|per\s+cent\b)", re.I)),
    ("money", re.compile(r"[$€£]\s?\d[\d,]*(?:\.\d+)?")),
    ("code", re.compile(r"\b(?:[A-Z]{2,5}\s?-?\d{2,4}[A-Z]?|[A-Z]\d{1,4}|\d{1,4}[A-Z])\b")),
    ("number", re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th)?\b")),
)
_WORD_NUMBER = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.I)
_NAME = re.compile(
    r"(?:[A-Z][\w'’.-]*|[A-Z]{2,})(?:\s+(?:(?:of|and|for|the|de|da|van|von|der|del|la|le|with|&)\s+)*"
    r"(?:[A-Z][\w'’.-]*))*"
)


@dataclass(frozen=True)
class Fact:
    kind: str  # number, percent, money, time, date, weekday, phone, email, url, code, name
    value: str  # normalised: "20", "14:00", "10-20", "tuesday", "6316326748", "okafor marcus", ...
    text: str  # as written


def key_facts(text: str) -> list[Fact]:
    """The key facts `text` states, in order of appearance, each once."""
    found: list[tuple[int, Fact]] = []
    masked = text
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(masked):
            for fact in _normalise(kind, match.group(0)):
                found.append((match.start(), fact))
            masked = masked[: match.start()] + " " * (match.end() - match.start()) + masked[match.end() :]
    for match in _WORD_NUMBER.finditer(masked):
        found.append((match.start(), Fact("number", str(NUMBER_WORDS[match.group(1).lower()]), match.group(0))))
        masked = masked[: match.start()] + " " * (match.end() - match.start()) + masked[match.end() :]
    found.extend(_names(masked))
    unique: dict[tuple[str, str], Fact] = {}
    for _, fact in sorted(found, key=lambda item: item[0]):
        unique.setdefault((fact.kind, fact.value), fact)
    return list(unique.values())


def _normalise(kind: str, raw: str) -> list[Fact]:
    text = raw.strip()
    if kind == "url":
        value = re.sub(r"^(?:https?://)?(?:www\.)?", "", text.lower()).rstrip(".,;:!?/")
        return [Fact("url", value, text.rstrip(".,;:!?"))]
    if kind == "email":
        return [Fact("email", text.lower(), text)]
    if kind == "phone":
        digits = re.sub(r"\D", "", text)
        return [Fact("phone", digits[-10:] if len(digits) > 10 else digits, text)]
    if kind == "timerange":
        return _time_range(text)
    if kind == "time":
        value = _clock(text, None)
        return [Fact("time", value, text)] if value else []
    if kind == "date":
        return _date(text)
    if kind == "weekday":
        day = next(d for d in WEEKDAYS if text.lower().startswith(d[:3]))
        return [Fact("weekday", day, text)]
    if kind == "percent":
        return [Fact("percent", _number(re.match(r"\d+(?:\.\d+)?", text).group(0)), text)]  # type: ignore[union-attr]
    if kind == "money":
        return [Fact("money", text[0] + _number(re.sub(r"[^\d.]", "", text)), text)]
    if kind == "code":
        return [Fact("code", re.sub(r"[\s-]", "", text).upper(), text)]
    return [Fact("number", _number(re.sub(r"(st|nd|rd|th)$", "", text)), text)]


def _number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else str(value)


def _clock(text: str, meridiem: str | None) -> str | None:
    """'2:00 pm' -> '14:00'; '2:00' alone -> '2:00~' (either half of the day); noon, midnight."""
    low = text.lower().replace(".", "")
    if "noon" in low:
        return "12:00"
    if "midnight" in low:
        return "0:00"
    match = re.match(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", low)
    if not match:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    half = match.group(3) or meridiem
    if hour > 24 or minute > 59:
        return None
    if half == "pm" and hour < 12:
        hour += 12
    elif half == "am" and hour == 12:
        hour = 0
    if half is None and hour <= 12:
        return f"{hour}:{minute:02d}~"
    return f"{hour:02d}:{minute:02d}"


def _time_range(text: str) -> list[Fact]:
    """'2:00-4:45 pm', 'from 1:00 to 3:00 pm': the start takes the end's am/pm unless that puts it after the end."""
    start, end = re.split(r"\s*(?:-|–|—|to|until|till)\s*", text, maxsplit=1, flags=re.I)
    half = re.search(r"([ap])\.?m\.?\s*$", end, re.I)
    end_value = _clock(end, None)
    start_value = _clock(start, None)
    if half and start_value and start_value.endswith("~") and not re.search(r"[ap]\.?m", start, re.I):
        shared = _clock(start, half.group(1).lower() + "m")
        if shared and end_value and _minutes(shared) <= _minutes(end_value):
            start_value = shared
        else:
            start_value = _clock(start, "am" if half.group(1).lower() == "p" else "pm")
    return [Fact("time", v, t) for v, t in ((start_value, start), (end_value, end)) if v]


def _minutes(value: str) -> int:
    hour, minute = value.rstrip("~").split(":")
    return int(hour) * 60 + int(minute)


def _date(text: str) -> list[Fact]:
    low = text.lower().replace(",", " ").replace(".", " ")
    year = re.search(r"\b(\d{4})\b", low)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        y, m, d = text.split("-")
        return [Fact("date", f"{int(m)}-{int(d)}", text), Fact("number", str(int(y)), y)]
    if "/" in text:
        parts = text.split("/")
        facts = [Fact("date", f"{int(parts[0])}-{int(parts[1])}", text)]
        if len(parts) == 3:
            facts.append(Fact("number", str(int(parts[2]) + (2000 if len(parts[2]) == 2 else 0)), parts[2]))
        return facts
    month = next(MONTHS[w] for w in re.findall(r"[a-z]+", low) if w in MONTHS)
    day = next(int(n) for n in re.findall(r"\b(\d{1,2})(?:st|nd|rd|th)?\b", low))
    facts = [Fact("date", f"{month}-{day}", text)]
    if year:
        facts.append(Fact("number", year.group(1), year.group(1)))
    return facts


def _names(masked: str) -> list[tuple[int, Fact]]:
    """Runs of capitalised words (linked by of/and/de/...), less a sentence's plain first word and titles."""
    found = []
    for match in _NAME.finditer(masked):
        words = match.group(0).split()
        start = match.start()
        sentence_start = _starts_sentence(masked, start)
        while words and (words[0].lower().strip(".,") in PLAIN_WORDS or words[0].lower() in CONNECTORS):
            start += masked[start:].index(words[0]) + len(words[0])
            words.pop(0)
            sentence_start = False
        while words and words[-1].lower() in CONNECTORS:
            words.pop()
        if not words:
            continue
        tokens = [w.strip(".,'’").lower() for w in words]
        tokens = [re.sub(r"['’]s$", "", t) for t in tokens if t and t.rstrip(".") not in TITLES]
        tokens = [t for t in tokens if t not in CONNECTORS]
        if not tokens or (sentence_start and len(words) == 1 and not words[0].isupper()):
            continue  # a single capitalised word opening a sentence is usually not a name
        if len(tokens) == 1 and tokens[0] in MONTHS:
            continue
        found.append((start, Fact("name", " ".join(tokens), " ".join(words))))
    return found


def _starts_sentence(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in '.!?:;\n"“(' or before.endswith(("Q", "A"))


def supports(fact: Fact, candidates: Iterable[Fact]) -> bool:
    """True when one of `candidates` states the same fact (a bare number also matches a percentage or sum of
    the same value, a time without am/pm either half of the day, a name any name sharing all its words)."""
    for other in candidates:
        if _same(fact, other):
            return True
    return False


_NUMERIC = {"number", "percent"}


def _same(a: Fact, b: Fact) -> bool:
    if a.kind == b.kind == "name":
        mine, theirs = set(a.value.split()), set(b.value.split())
        return mine <= theirs or theirs <= mine
    if a.kind == b.kind == "time":
        return _times_match(a.value, b.value)
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        return a.value == b.value
    if {a.kind, b.kind} == {"number", "money"}:
        return a.value.lstrip("$€£") == b.value.lstrip("$€£")
    if {a.kind, b.kind} <= {"code", "number"} and a.kind != b.kind:
        return False
    return a.kind == b.kind and a.value == b.value


def _times_match(a: str, b: str) -> bool:
    """Equal, or one side has no am/pm ('2:00~') and the other is the same clock time in either half."""
    if a == b:
        return True
    if not (a.endswith("~") or b.endswith("~")):
        return False
    return _minutes(a) % 720 == _minutes(b) % 720


@dataclass(frozen=True)
class FactCheck:
    recall: float | None  # share of the reference's key facts the answer states (None: it has none)
    wrong: list[Fact]  # key facts the answer states that neither the reference nor the question holds
    stated: int  # key facts in the answer

    @property
    def has_wrong(self) -> bool:
        return bool(self.wrong)


def check_facts(answer: str, reference: str, question: str = "") -> FactCheck:
    stated = key_facts(answer)
    expected = key_facts(reference)
    allowed = expected + key_facts(question)
    wrong = [f for f in stated if not supports(f, allowed)]
    recall = sum(supports(f, stated) for f in expected) / len(expected) if expected else None
    return FactCheck(recall=recall, wrong=wrong, stated=len(stated))


def unknown_facts(answer: str, known: Iterable[Fact]) -> list[Fact]:
    """Facts of `answer` that none of `known` states: for a fine-tuned model, what no training pair says."""
    pool = list(known)
    return [f for f in key_facts(answer) if not supports(f, pool)]
