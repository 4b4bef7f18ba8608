"""The decision to abstain at answer time, the same in eval, chat, serve and the exported model's script: a
grounded model (and the retrieval baseline) abstains when the nearest training question is less similar to the
question than the threshold calibrated on validation questions (the retrieval fallback); a fine-tuned model
abstains without answering when the question names a specific the data never mentions or asks for a kind of fact
no training answer holds (the question check); its answer is its own refusal, or is replaced by the refusal when
it states a key fact that no training pair and not the question holds (the fact check). A grounded answer close
to one of its retrieved answers, or opening with one's first words, is shown as that answer, word for word
(quoting), unless, close but not opening with it, it states a key fact none of its retrieved answers holds (the
fact check: it fitted the question's specific into an answer about something else); one in its own words may state
only facts its retrieved pairs or the question hold, and a question naming a specific none of its retrieved pairs
mentions is refused (the fact and question checks, held to the context a grounded model is given). Last, an answer
to "how many X", "how much" or "how long" that states no amount of X, no amount or no duration or length answers
another question: a grounded model's is shown as the first retrieved answer that states one, else it is refused
(the kind check, switched with the fact check).

Self-contained (it imports only asked.py, facts.py, gaps.py and refusal.py beside it, and rouge-score), so an export
carries these modules and its ask.py abstains exactly as qatune does; trust/run.py reads a run's settings."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .asked import answered_unnamed, asked_for, states
from .facts import Fact, key_facts, unknown_facts
from .gaps import question_gaps
from .refusal import is_refusal

MODEL, RETRIEVAL_FALLBACK, QUESTION_CHECK, FACT_CHECK = "model", "retrieval", "question", "facts"
KIND_CHECK = "kind"  # the answer states no fact of the kind the question asks for (asked.py)


@functools.lru_cache(maxsize=1)
def _rouge_l() -> Any:
    """ROUGE-L F1 with the Porter stemmer (rouge-score), as eval scores answers."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


GROUNDED_CHECKS = "retrieved pairs; quotes agree"  # what a grounded model's checks hold it to (fingerprinted)
KINDS_ASKED = "how many, how much, how long: a unit or a span"  # what the kind check reads (fingerprinted)
QUOTE_WORDS = 8  # a grounded answer that opens with this many words of a retrieved answer is copying it


def opens_with(words: list[str], answer: list[str], complete: bool = False) -> bool:
    """Whether an answer's `words` open with the first QUOTE_WORDS words of a retrieved answer's words (all of
    them when it has fewer), word for word. `complete`: the answer is still being written and its last word may
    be cut, so a word must follow them."""
    n = min(QUOTE_WORDS, len(answer))
    return n > 0 and len(words) >= n + int(complete) and words[:n] == answer[:n]


@dataclass(frozen=True)
class Verdict:
    text: str  # what the user is shown
    abstained: bool
    by: str | None = None  # model, retrieval or facts
    raw: str | None = None  # the model's own answer when a check replaced it or a retrieved answer was quoted
    unknown: tuple[str, ...] = ()  # the facts no training pair holds (fact check), or why the data cannot answer
    quoted: bool = False  # the text is a retrieved training answer, word for word


@dataclass(frozen=True)
class Guard:
    refusal: str
    min_similarity: float | None = None  # the retrieval fallback's threshold (None: off)
    check_facts: bool = True
    check_questions: bool = True
    quote: float | None = None  # ROUGE-L from which a grounded answer is shown as the retrieved answer (None: off)
    known: tuple[Fact, ...] = field(default=(), repr=False)  # every key fact of the training pairs
    answer_kinds: frozenset[str] = field(default=frozenset(), repr=False)  # kinds of fact the answers hold
    text: str = field(default="", repr=False)  # the training pairs' text, for numbered items ("week 5")
    answered: frozenset[str] = field(default=frozenset(), repr=False)  # kinds the pairs answer unnamed (asked.py)

    @classmethod
    def from_pairs(cls, refusal: str, pairs: Iterable[dict], **settings: Any) -> Guard:
        pairs = list(pairs)
        known, text = pair_facts(pairs)
        kinds = frozenset(f.kind for p in pairs for f in key_facts(p["answer"]))
        answered = answered_unnamed(pairs)
        return cls(refusal=refusal, known=tuple(known), answer_kinds=kinds, text=text, answered=answered, **settings)

    def gaps(self, question: str, pairs: list[dict] | None = None) -> Verdict | None:
        """The refusal, without generating, when the question check finds what the data cannot answer; with
        `pairs` (a grounded model's retrieved pairs), what they cannot: a code, date, numbered item or titled name
        of the question that the data mentions elsewhere but none of them does."""
        if not self.check_questions or not self.text:
            return None
        if pairs:
            context, text = pair_facts(pairs)
            found = question_gaps(question, context, set(self.answer_kinds), text)
            found = [f"{gap} (not in the retrieved pairs)" for gap in found]
        else:
            found = question_gaps(question, list(self.known), set(self.answer_kinds), self.text)
        return Verdict(self.refusal, True, QUESTION_CHECK, unknown=tuple(found)) if found else None

    def quoting(self, verdict: Verdict, retrieved: list[str], fine_tuned: bool = True) -> Verdict:
        """A grounded answer as the retrieved answer it copies (it opens with that answer's first QUOTE_WORDS
        words) or else is closest to, when at least `quote` ROUGE-L close. A close answer that states a key fact
        none of the retrieved answers holds is not that answer: it fitted a specific (often the question's, as
        "Week 5 covers ..." written from week 1's answer) into an answer about something else, so the fact check
        (fine-tuned models) refuses it instead."""
        if self.quote is None or verdict.abstained or not retrieved:
            return verdict
        copied = self.copied(verdict.text, retrieved)
        if copied is not None:
            return copied
        scorer = _rouge_l()
        scores = [scorer.score(answer, verdict.text)["rougeL"].fmeasure for answer in retrieved]
        best = max(range(len(scores)), key=lambda i: scores[i])
        if scores[best] < self.quote or retrieved[best] == verdict.text:
            return verdict
        if fine_tuned and self.check_facts:
            refused = self._facts_in(verdict.text, [f for answer in retrieved for f in key_facts(answer)])
            if refused is not None:
                return refused
        return Verdict(retrieved[best], False, raw=verdict.text, quoted=True)

    def copied(self, answer: str, retrieved: list[str]) -> Verdict | None:
        """The retrieved answer a grounded answer copies (it opens with its first QUOTE_WORDS words), whole, or
        None. Decided on those words alone, so an answer whose decoding stopped there is shown the same."""
        if self.quote is None:
            return None
        words = answer.split()
        copied = next((r for r in retrieved if opens_with(words, r.split())), None)
        if copied is None:
            return None
        return Verdict(answer, False) if copied == answer else Verdict(copied, False, raw=answer, quoted=True)

    def falls_back(self, top_similarity: float | None) -> bool:
        """True when retrieval found nothing close enough: answer with the refusal, without generating."""
        return self.min_similarity is not None and top_similarity is not None and top_similarity < self.min_similarity

    def fingerprint(self) -> list[Any]:
        """What changes which answers abstain (saved answers are made again when it does)."""
        copying = QUOTE_WORDS if self.quote is not None else None
        scope = GROUNDED_CHECKS if self.check_facts or self.check_questions else None
        kinds = KINDS_ASKED if self.check_facts else None
        checks = [self.check_facts, self.check_questions, self.quote, copying, scope, kinds]
        return [self.refusal, self.min_similarity, *checks]

    def fallback(self) -> Verdict:
        return Verdict(self.refusal, True, RETRIEVAL_FALLBACK)

    def judge(self, answer: str, question: str, fine_tuned: bool = True) -> Verdict:
        """The answer as shown: the model's own refusal counts as abstaining; a fine-tuned model's answer with a
        fact found in no training pair (nor in the question) becomes the refusal."""
        if is_refusal(answer, self.refusal):
            return Verdict(answer, True, MODEL)
        shown = Verdict(answer, False)
        if not (fine_tuned and self.check_facts and self.known):
            return shown
        return self._facts_in(answer, [*self.known, *key_facts(question)]) or shown

    def _facts_in(self, answer: str, known: list[Fact]) -> Verdict | None:
        """The refusal (the fact check) when `answer` states a key fact none of `known` states, else None."""
        unknown = unknown_facts(answer, known)
        if not unknown:
            return None
        return Verdict(self.refusal, True, FACT_CHECK, raw=answer, unknown=tuple(f.text for f in unknown))

    def grounded(self, verdict: Verdict, said: str, pairs: list[dict]) -> Verdict:
        """A grounded answer in its own words (not abstaining, not quoted) that states a key fact none of its
        retrieved pairs and not the user holds becomes the refusal (the fact check, held to the context): a
        fact that is elsewhere in the data but not in what was retrieved was not read from the context."""
        if not self.check_facts or verdict.abstained or verdict.quoted:
            return verdict
        return self._facts_in(verdict.text, [*pair_facts(pairs)[0], *key_facts(said)]) or verdict

    def asked(self, verdict: Verdict, question: str, retrieved: list[str]) -> Verdict:
        """A fine-tuned model's answer that states no fact of the kind the question asks for (an amount of what "how
        many" counts, an amount, a duration or length: asked.py) answers another question: it is shown as the first
        of its `retrieved` answers that states one (a grounded model quoted the wrong pair), else refused (the kind
        check, with the fact check's switch)."""
        if not self.check_facts or verdict.abstained:
            return verdict
        wanted = asked_for(question)
        if wanted is None or states(wanted, verdict.text, self.answered):
            return verdict
        own = verdict.raw if verdict.raw is not None else verdict.text  # the model's own answer
        other = next((r for r in retrieved if states(wanted, r, self.answered)), None)
        if other is not None:
            return Verdict(other, False, raw=own, quoted=True)
        what = {"long": "duration or length"}.get(wanted.form, "amount")
        if wanted.counted:
            what = f"amount of {' '.join(wanted.counted)}"
        return Verdict(self.refusal, True, KIND_CHECK, raw=own, unknown=(f"states no {what}",))


def pair_facts(pairs: Iterable[dict]) -> tuple[list[Fact], str]:
    """Every key fact of these pairs' questions and answers, and their text (for numbered items, "week 5")."""
    texts = [str(t) for p in pairs for t in (p.get("question", ""), p["answer"])]
    return [f for text in texts for f in key_facts(text)], "\n".join(texts)


def before(
    guard: Guard, question: str, *, tuned: bool, top_similarity: float | None = None, pairs: list[dict] | None = None
) -> Verdict | None:
    """The refusal a question gets without generating, or None: the question check (fine-tuned models), then the
    retrieval fallback (grounded ones: `top_similarity` is how close the nearest training pair is), then the
    question check held to the retrieved `pairs` (fine-tuned grounded models)."""
    early = guard.gaps(question) if tuned else None
    if early is None and top_similarity is not None and guard.falls_back(top_similarity):
        early = guard.fallback()
    if early is None and tuned and pairs:
        early = guard.gaps(question, pairs)
    return early


def after(
    guard: Guard,
    answer: str,
    said: str,
    *,
    tuned: bool,
    pairs: list[dict] | None = None,
    question: str | None = None,
) -> Verdict:
    """What is shown of a generated answer: the model's own refusal counts as abstaining, then the fact check
    (fine-tuned models; `said`: what the user wrote) and quoting (grounded: `pairs` are its retrieved pairs).
    An answer that copies a retrieved answer is that answer (a training answer: its facts are known); a grounded
    answer that is not shown as a retrieved one may state only facts its retrieved pairs or the user hold. Last,
    a fine-tuned model's answer must state the kind of fact `question` (default: `said`) asks for (the kind check)."""
    retrieved = [str(p["answer"]) for p in pairs or []]
    verdict = guard.copied(answer, retrieved)
    if verdict is None:
        verdict = guard.quoting(guard.judge(answer, said, fine_tuned=tuned), retrieved, fine_tuned=tuned)
        if tuned and pairs:
            verdict = guard.grounded(verdict, said, pairs)
    return guard.asked(verdict, said if question is None else question, retrieved) if tuned else verdict


def guarded(
    guard: Guard,
    conversations: list[list[dict]],
    generate: Callable[[list[list[dict]], list[str] | None], list[Any]],
    *,
    tuned: bool,
    lookup: Callable[[list[str]], list[tuple[list[dict], float]]] | None = None,
    references: list[str] | None = None,
) -> list[tuple[Verdict, Any]]:
    """`before` and `after` around a batch of generations, as (verdict, the model's generation or None when it was
    not asked). `generate(conversations, references)` returns objects with a `.text`; `lookup` (grounded) gives
    each question's retrieved pairs and how close the nearest is. Facts the user stated in any turn count as
    known. Engine-agnostic: qatune's engine and an exported model's ask.py call it."""
    asked = [conv[-1]["content"] for conv in conversations]
    hits = lookup(asked) if lookup is not None else [None] * len(asked)
    early = [
        before(guard, q, tuned=tuned, top_similarity=top, pairs=pairs)
        for q, (pairs, top) in zip(asked, [(None, None) if hit is None else hit for hit in hits], strict=True)
    ]
    todo = [conv for conv, e in zip(conversations, early, strict=True) if e is None]
    refs = None if references is None else [r for r, e in zip(references, early, strict=True) if e is None]
    gens = iter(generate(todo, refs) if todo else [])
    out: list[tuple[Verdict, Any]] = []
    for conv, question, e, hit in zip(conversations, asked, early, hits, strict=True):
        if e is not None:
            out.append((e, None))
            continue
        gen = next(gens)
        pairs = hit[0] if hit is not None else None
        out.append((after(guard, gen.text, said_in(conv), tuned=tuned, pairs=pairs, question=question), gen))
    return out


def said_in(conversation: list[dict]) -> str:
    """Everything the user wrote in a conversation (facts stated there count as known)."""
    return " ".join(m["content"] for m in conversation if m.get("role") == "user")
