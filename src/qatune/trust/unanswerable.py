"""Questions the data does not answer: two banks written for qatune (off-topic questions, and details FAQs often
leave out), and near misses made from the data's own questions by swapping their key fact (a course code, a date, a
number, a person's name) for one the data never mentions. Each is dealt, by a hash of its text, to training
(refusals the models learn), validation (calibrating abstention) or evaluation (the generated `unanswerable` set),
so no question is both trained and scored."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from qatune.trust.facts import Fact, key_facts

BANKS = {"off-topic": "offtopic_questions.txt", "missing-detail": "missing_detail_questions.txt"}
PARTS = ("train", "val", "eval")
CLOSE_TO_DATA = 0.7  # a bank question this similar to a data question may be answered there: left out
EVAL_PER_KIND = {"off-topic": 10, "missing-detail": 14, "near-miss": 14}
NEAR_MISS_SOURCES = 2000  # data questions a near miss may be made from (a seeded sample of larger data)
CLOSENESS_SAMPLE = 5000  # data questions a bank question is compared with (a seeded sample of larger data)
# Surnames for near misses about people; one the data mentions is never used.
SURNAMES = (
    "Novak Haddad Okonkwo Lindgren Moreau Takahashi Castillo Brennan Petrov Nakamura Oyelaran Sorensen Duarte "
    "Whitaker Kowalski Mbeki Larsen Fitzgerald Abebe Rinaldi"
).split()
_TITLE = re.compile(r"\b(?:Prof\.?|Professor|Dr\.?|Mr\.?|Mrs\.?|Ms\.?)\s+([A-Z][\w-]+)")
# A number after one of these is an amount ("after 4 days"), not a label ("week 4"): it is never swapped.
_AMOUNT_BEFORE = frozenset("after before within than of for in to at by every per about over under than".split())


@dataclass(frozen=True)
class Unanswerable:
    id: str
    question: str
    kind: str  # off-topic, missing-detail, near-miss, or the user's own (file)

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": "", "answerable": False, "kind": self.kind}


def bank(kind: str) -> list[str]:
    text = (files("qatune") / "trust" / BANKS[kind]).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _hash(question: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{question.casefold()}".encode()).hexdigest(), 16)


def deal(questions: list[str], seed: int, with_eval: bool = True) -> list[str]:
    """The part of each question: ranked by a hash of its text and the seed, the first half goes to train, the
    next fifth to val and the rest to eval (without an eval part: 70% train, 30% val), so even a few questions
    of a kind are split in those shares."""
    order = sorted(range(len(questions)), key=lambda i: _hash(questions[i], seed))
    cuts = (0.5, 0.7) if with_eval else (0.7, 1.01)
    parts = [""] * len(questions)
    for rank, i in enumerate(order):
        at = (rank + 0.5) / len(questions)
        parts[i] = "train" if at < cuts[0] else "val" if at < cuts[1] else "eval"
    return parts


def near_misses(questions: list[dict], data_texts: list[str]) -> list[dict]:
    """At most one near miss per question: its first code, date, number or titled name swapped for one that no
    text of the data holds. Returns [{question, from_id}] in data order."""
    known = [f for text in data_texts for f in key_facts(text)]
    values = {(f.kind, f.value) for f in known}
    words = {w.casefold() for text in data_texts for w in re.findall(r"[^\W\d_]+", text)}
    ranges = [(int(a), int(b)) for a, b in _ranges(known)]
    out = []
    for row in questions:
        swapped = _swap(row["question"], values, words, ranges)
        if swapped and swapped != row["question"]:
            out.append({"question": swapped, "from_id": str(row["id"])})
    return out


def _swap(question: str, values: set[tuple[str, str]], words: set[str], ranges: list[tuple[int, int]]) -> str | None:
    """The question with its one key fact swapped; None when it has none or several (the others would still
    tie it to the data, e.g. a holiday's name beside its date)."""
    facts = key_facts(question)
    if len(facts) != 1:
        return None
    person = _TITLE.search(question)
    if person:
        name = next((s for s in SURNAMES if s.casefold() not in words), None)
        return question[: person.start(1)] + name + question[person.end(1) :] if name else None
    fact = facts[0]
    if fact.kind in ("number", "percent"):
        before = question[: question.find(fact.text)].split()
        if not before or before[-1].casefold() in _AMOUNT_BEFORE or not before[-1].isalpha():
            return None
    new = _other_value(fact, values, ranges)
    return question.replace(fact.text.rstrip(".,?!"), new, 1) if new is not None else None


def _other_value(fact: Fact, values: set[tuple[str, str]], ranges: list[tuple[int, int]]) -> str | None:
    text = fact.text.rstrip(".,?!")
    if fact.kind == "code":
        match = re.fullmatch(r"([A-Za-z]+)(\s?-?)(\d+)([A-Za-z]?)", text)
        if not match:
            return None
        prefix, sep, digits, suffix = match.groups()
        for step in (100, 200, 300, 10, 20):
            number = int(digits) + step
            candidate = f"{prefix}{sep}{number:0{len(digits)}d}{suffix}"
            if ("code", re.sub(r"[\s-]", "", candidate).upper()) not in values:
                return candidate
        return None
    if fact.kind == "date" and "/" in text:
        month, day = (int(p) for p in text.split("/")[:2])
        for shift in (7, 14, 3, -7):
            new_day = day + shift
            if 1 <= new_day <= 28 and ("date", f"{month}-{new_day}") not in values:
                width = len(text.split("/")[1])
                return f"{month:0{len(text.split('/')[0])}d}/{new_day:0{width}d}"
        return None
    if fact.kind in ("number", "percent") and text.replace(",", "").isdigit():
        number = int(text.replace(",", ""))
        for step in (3, 4, 5, 7, 11):
            candidate = number + step
            inside = any(lo <= candidate <= hi for lo, hi in ranges)
            if not inside and ("number", str(candidate)) not in values and ("percent", str(candidate)) not in values:
                return str(candidate)
    return None


def _ranges(known: list[Fact]) -> list[tuple[str, str]]:
    """Number ranges the data states ("weeks 10 to 12"), read from the facts' source texts."""
    found = []
    for fact in known:
        match = re.search(r"(\d+)\s*(?:to|-|–|through)\s*(\d+)", fact.text)
        if match:
            found.append(match.groups())
    return found


def generated_sets(
    train_rows: list[dict], data_texts: list[str], embedder: Any, seed: int, with_eval: bool = True
) -> dict[str, list[Unanswerable]]:
    """The unanswerable questions of each part (train, val, eval) for this data: bank questions not close to any
    data question, and near misses, each kind dealt to the parts by `part_of` (no eval part when `with_eval` is
    false: the eval set then comes from elsewhere)."""
    from qatune.rag.embeddings import encode

    data_questions = [r["question"] for r in train_rows]
    sources = _sample(train_rows, NEAR_MISS_SOURCES, seed)
    taken = {re.sub(r"\W+", " ", q.casefold()).strip() for q in data_questions}
    near = [("near-miss", m["question"]) for m in near_misses(sources, data_texts)]
    banked = [(kind, q) for kind in BANKS for q in bank(kind)]
    if banked and data_questions:  # near misses need no check: their swapped fact is one the data never holds
        compared = _sample(data_questions, CLOSENESS_SAMPLE, seed)
        closest = (encode(embedder, [q for _, q in banked]) @ encode(embedder, compared).T).max(axis=1)
        banked = [c for c, sim in zip(banked, closest, strict=True) if sim < CLOSE_TO_DATA]
    candidates = [(k, q) for k, q in banked + near if re.sub(r"\W+", " ", q.casefold()).strip() not in taken]
    parts: dict[str, list[Unanswerable]] = {p: [] for p in PARTS}
    for kind in (*BANKS, "near-miss"):
        mine = [(i, q) for i, (k, q) in enumerate(candidates) if k == kind]
        for (i, question), part in zip(mine, deal([q for _, q in mine], seed, with_eval), strict=True):
            parts[part].append(Unanswerable(f"{part}-{kind}-{i}", question, kind))
    parts["eval"] = _capped(parts["eval"])
    return parts


def _sample(items: list, most: int, seed: int) -> list:
    """All of `items`, or `most` of them chosen by a hash of the seed and their position, in their order."""
    if len(items) <= most:
        return items
    keep = sorted(range(len(items)), key=lambda i: _hash(str(i), seed))[:most]
    return [items[i] for i in sorted(keep)]


def _capped(rows: list[Unanswerable]) -> list[Unanswerable]:
    counts: dict[str, int] = {}
    kept = []
    for row in rows:
        counts[row.kind] = counts.get(row.kind, 0) + 1
        if counts[row.kind] <= EVAL_PER_KIND.get(row.kind, 0):
            kept.append(row)
    return kept
