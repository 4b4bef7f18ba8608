"""Offline question rewording by rule: question-form rewrites (indirect questions, requests, keyword
queries, contractions), fronted or stranded prepositional phrases, and polite wrappers. Words are only
moved, never replaced, so numbers, dates, codes and names always survive unchanged."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_AUX = "is|are|was|were|will|can|should|must|does|do|did|has|have"
_WH = "what|who|whom|when|where|which|how many|how much|how long|how|why"
_PREP = "in|on|at|for|during|from|by|with|about|to|of|under"
# Words that end a passive or adjectival predicate ("when are the labs held?" -> "when the labs are held").
_PARTICIPLE = re.compile(r"[a-z]+(?:ed|wn|ght)|held|met|given|taken|written|due|open|available|run|set|taught")
_PREP_WORDS = set(_PREP.split("|"))
_WRAPPERS = (
    "Quick question: {q}",
    "I have a question: {q}",
    "Could you help me with this: {q}",
    "{q} Thanks!",
    "Hi, {lq}",
)
_INDIRECT = ("Can you tell me {i}?", "Do you know {i}?", "I'd like to know {i}.", "Please tell me {i}.")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    """Lower-case the first word unless it looks like a name, an acronym or a code (kept as written)."""
    first, _, rest = text.partition(" ")
    if first[:1].isupper() and first[1:].islower() and first.isalpha() and first.lower() in _LOWERABLE:
        first = first.lower()
    return f"{first} {rest}".strip()


_LOWERABLE = set(
    "what who whom when where which how why is are was were will can could should must does do did has have "
    "in on at for during from by with about to of under the a an if i".split()
)


def _body(question: str) -> str:
    return question.strip().rstrip("?.! ").strip()


def _indirect(question: str) -> str | None:
    """'When are the labs held?' -> 'when the labs are held'; None when the shape is not recognised."""
    m = re.fullmatch(rf"({_WH}) ({_AUX}) (.+)", _body(question), flags=re.IGNORECASE)
    if not m:
        return None
    wh, aux, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if aux in ("does", "do", "did", "has", "have", "can", "will", "should", "must"):
        return None  # needs verb agreement ("when does it meet" -> "when it meets"): left alone
    words = rest.split()
    for k in range(1, len(words)):
        if _PARTICIPLE.fullmatch(words[k].lower()) or words[k].lower() in _PREP_WORDS:
            if words[k].lower() in _PREP_WORDS:
                break
            return f"{wh} {' '.join(words[:k])} {aux} {' '.join(words[k:])}"
    return f"{wh} {rest} {aux}"


def _as_indirect(question: str, rng: random.Random) -> str | None:
    inner = _indirect(question)
    return rng.choice(_INDIRECT).format(i=inner) if inner else None


def _as_request(question: str, rng: random.Random) -> str | None:
    """'What is the course code?' -> 'Tell me the course code.'"""
    m = re.fullmatch(r"what(?:'s| is| are) (the .+)", _body(question), flags=re.IGNORECASE)
    if not m:
        return None
    return rng.choice(("Tell me {x}.", "I need {x}.", "Please give me {x}.")).format(x=m.group(1))


def _as_keywords(question: str, rng: random.Random) -> str | None:
    """'What is the title of this course?' -> 'The title of this course?' (a search-box query)."""
    m = re.fullmatch(r"what(?:'s| is| are) (the .+)", _body(question), flags=re.IGNORECASE)
    return _sentence(m.group(1)) + "?" if m else None


def _contraction(question: str, rng: random.Random) -> str | None:
    body = question.strip()
    swaps = [(r"^What is\b", "What's"), (r"^What's\b", "What is"), (r"^Who is\b", "Who's"), (r"^Who's\b", "Who is")]
    swaps += [(r"^Where is\b", "Where's"), (r"^How is\b", "How's"), (r"\bis not\b", "isn't"), (r"\bdo not\b", "don't")]
    for pattern, repl in swaps:
        if re.search(pattern, body):
            return re.sub(pattern, repl, body, count=1)
    return None


def _move_preposition(question: str, rng: random.Random) -> str | None:
    """'In which semester is it offered?' <-> 'Which semester is it offered in?'"""
    body = _body(question)
    m = re.fullmatch(rf"({_PREP}) (which|what) (.+)", body, flags=re.IGNORECASE)
    if m:
        return f"{_sentence(m.group(2).lower())} {m.group(3)} {m.group(1).lower()}?"
    m = re.fullmatch(rf"(which|what) (.+) ({_PREP})", body, flags=re.IGNORECASE)
    if m:
        return f"{_sentence(m.group(3).lower())} {m.group(1).lower()} {m.group(2)}?"
    return None


def _front_phrase(question: str, rng: random.Random) -> str | None:
    """'What topics are covered in this course?' -> 'In this course, what topics are covered?'"""
    m = re.fullmatch(r"(.+?) ((?:in|for|during|at|on) (?:this|the|our|your) [\w-]+(?: [\w-]+)?)", _body(question))
    if not m or len(m.group(1).split()) < 3:
        return None
    return f"{_sentence(m.group(2))}, {_lower_first(m.group(1))}?"


def _wrap(question: str, rng: random.Random) -> str | None:
    q = question.strip()
    if not q.endswith("?"):
        return None
    return rng.choice(_WRAPPERS).format(q=q, lq=_lower_first(q))


REWRITES: dict[str, Callable[[str, random.Random], str | None]] = {
    "indirect": _as_indirect,
    "request": _as_request,
    "keywords": _as_keywords,
    "contraction": _contraction,
    "preposition": _move_preposition,
    "front": _front_phrase,
    "wrap": _wrap,
}


def rewrite(question: str, rng: random.Random, kinds: list[str] | None = None) -> str | None:
    """One rule-based rewording (a random applicable rule), or None when no rule applies."""
    names = list(kinds or REWRITES)
    rng.shuffle(names)
    for name in names:
        text = REWRITES[name](question, rng)
        if text and text.strip() != question.strip():
            return re.sub(r"\s+", " ", text).strip()
    return None
