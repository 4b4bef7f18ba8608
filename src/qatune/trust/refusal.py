"""The refusal a fine-tuned model gives when the data does not answer a question, in the data's language, and
the test of whether an answer abstains (the refusal itself, or a plain "I don't know" in its first sentence)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

AUTO = "auto"
REFUSALS = {
    "en": "I'm sorry, I don't know the answer to that.",
    "de": "Das weiß ich leider nicht.",
    "fr": "Désolé, je ne connais pas la réponse.",
    "es": "Lo siento, no sé la respuesta.",
    "it": "Mi dispiace, non conosco la risposta.",
    "pt": "Desculpe, não sei a resposta.",
    "nl": "Sorry, dat weet ik niet.",
}
# Frequent words that tell the languages of REFUSALS apart.
_STOPWORDS = {
    "en": "the is are what when where who how do does of to and in for can i my",
    "de": "der die das ist sind wie wann wo wer was und ich mein kann nicht für mit",
    "fr": "le la les est sont quand où qui comment que et je mon pour avec des une",
    "es": "el la los es son cuándo dónde quién cómo qué y yo mi para con una del",
    "it": "il lo la gli è sono quando dove chi come che e io mio per con una della",
    "pt": "o a os é são quando onde quem como que e eu meu para com uma do",
    "nl": "de het een is zijn wanneer waar wie hoe wat en ik mijn voor met niet van",
}
# A first sentence that declines to answer, in the languages above.
_DECLINES = re.compile(
    r"\b(?:i|we)\s*(?:do not|don't|dont|cannot|can't|can not|am not able to|'m not able to|am unable to|'m unable to"
    r"|have no way to)\s+(?:know|say|answer|tell|find|help)"
    r"|\bi(?:'m| am) (?:not sure|sorry, but i don)|\b(?:no|not enough) information\b|\bi have no (?:idea|information)"
    r"|\bweiß (?:ich )?(?:leider )?nicht\b|\bje ne (?:sais|connais) pas\b|\bno (?:lo )?sé\b|\bnon (?:lo )?so\b"
    r"|\bnão sei\b|\bweet ik niet\b",
    re.I,
)


def data_language(texts: Iterable[str]) -> str:
    """The REFUSALS language whose frequent words the texts use most (English when none stands out)."""
    counts: Counter[str] = Counter()
    words = Counter(w for t in texts for w in re.findall(r"[^\W\d_]+", t.lower()))
    for lang, stop in _STOPWORDS.items():
        counts[lang] = sum(words[w] for w in stop.split())
    best, hits = max(counts.items(), key=lambda item: (item[1], item[0] == "en"))
    return best if hits else "en"


def refusal_text(setting: str, texts: Iterable[str]) -> str:
    """`auto`: the refusal in the data's language; anything else is the user's own refusal."""
    return REFUSALS[data_language(texts)] if setting == AUTO else setting


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("’", "'").lower()
    return " ".join(re.sub(r"[^\w' ]+", " ", text).split())


def is_refusal(answer: str, refusal: str) -> bool:
    """True when the answer is the refusal (or begins with it), or its first sentence declines to answer."""
    plain, own = _plain(answer), _plain(refusal)
    if own and plain.startswith(own):
        return True
    first = re.split(r"(?<=[.!?])\s", answer.strip(), maxsplit=1)[0] if answer.strip() else ""
    return bool(_DECLINES.search(first.replace("’", "'")))


def run_refusal(rundir: Any, setting: str) -> str:
    """The refusal text of a run: the setting, or for `auto` the refusal in the language of its training data."""
    from qatune.storage import read_jsonl

    train = rundir.split_file("train")
    rows = read_jsonl(train) if setting == AUTO and train.exists() else []
    return refusal_text(setting, [r["question"] for r in rows] + [r["answer"] for r in rows])
