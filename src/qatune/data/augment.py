"""Question rewordings, offline and deterministic by seed: rule-based rewrites of the question's form
(`reword.py`) combined with WordNet synonyms (1-2 words). Numbers, dates, times, course codes and
capitalized names are never touched; answers are kept as they are. WordNet comes from Debian's
wordnet-base files, arranged once into an NLTK corpus folder under QATUNE_HOME."""

from __future__ import annotations

import functools
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from qatune.console import QatuneError, warn
from qatune.data.clean import question_key
from qatune.data.reword import rewrite
from qatune.storage import atomic_dir, atomic_write_text

SYSTEM_WORDNET = Path("/usr/share/wordnet")
_FILES = (
    "index.noun",
    "index.verb",
    "index.adj",
    "index.adv",
    "data.noun",
    "data.verb",
    "data.adj",
    "data.adv",
    "noun.exc",
    "verb.exc",
    "adj.exc",
    "adv.exc",
    "index.sense",
    "cntlist.rev",
)
# The 45 lexicographer files of WordNet 3.0, in their standard order (NLTK needs this file; Debian lacks it).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_STOP = set(
    "the and what when where which who whom whose how why is are was were be been being do does did done "
    "can could will would should shall may might must have has had having this that these those there "
    "their they them for from with about into onto over under after before than then not any all each per "
    "its our your you his her she him one also only many much more most some such very too get got "
    "am pm noon midnight week weeks day days year years month months semester term hour hours minute "
    "minutes date time times percent first second third last next january february march april june july "
    "august september october november december monday tuesday wednesday thursday friday saturday sunday "
    "yes other own same out off but nor yet".split()
)
_WORD = re.compile(r"[a-z]{3,}")
_EDGE = "\"'()[]{},.;:!?"


def nltk_data_dir() -> Path:
    from qatune.storage import qatune_home

    return qatune_home() / "nltk_data"


def wordnet_dir(source: Path = SYSTEM_WORDNET) -> Path:
    """$QATUNE_HOME/nltk_data/corpora/wordnet, built from the system WordNet files on first use."""
    target = nltk_data_dir() / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return target
    missing = [name for name in _FILES if not (source / name).is_file()]
    if missing:
        raise QatuneError(
            f"WordNet is not installed ({source / missing[0]} is missing), so --augment cannot "
            "run: `apt-get install wordnet-base wordnet-sense-index`, or prepare without --augment"
        )
    with atomic_dir(target) as tmp:
        for name in _FILES:
            shutil.copyfile(source / name, tmp / name)
        lines = [f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)]
        atomic_write_text(tmp / "lexnames", "".join(lines))
    return target


@functools.lru_cache(maxsize=2)
def _reader(folder: str) -> Any:
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        """English lookups only. NLTK's reader also maps another WordNet version's synset offsets onto this
        one at start-up (by reading index.sense twice, about 3 s); only multilingual (OMW) data uses that
        map, and this reader has none."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    root = str(Path(folder).parents[1])
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EnglishWordNet(folder, None)


def wordnet() -> Any:
    return _reader(str(wordnet_dir()))


@functools.lru_cache(maxsize=50_000)
def _synonyms(word: str) -> tuple[str, ...]:
    """Synonyms from the word's most common sense that offers any, among senses where the word is itself
    a lemma (so inflected forms, whose replacements would not agree, are left alone)."""
    for synset in wordnet().synsets(word)[:3]:
        names = synset.lemma_names()
        if word not in names:
            continue
        found = [n.replace("_", " ") for n in names if n != word]
        found = [t for t in dict.fromkeys(found) if re.fullmatch(r"[a-z]+(?: [a-z]+)?", t)]
        if found:
            return tuple(found)
    return ()


def _candidates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of words that may change: lowercase, not a stop word, no digits nearby."""
    chunks = list(re.finditer(r"\S+", text))
    spots = []
    for i, chunk in enumerate(chunks):
        core = chunk.group().strip(_EDGE)
        if not _WORD.fullmatch(core) or core in _STOP:
            continue
        near = [chunks[j].group() for j in (i - 1, i + 1) if 0 <= j < len(chunks)]
        if any(re.search(r"\d", n) for n in near):
            continue
        start = chunk.start() + chunk.group().index(core)
        spots.append((start, start + len(core), core))
    return [s for s in spots if _synonyms(s[2])]


def variant(text: str, rng: random.Random) -> str | None:
    spots = _candidates(text)
    if not spots:
        return None
    chosen = sorted(rng.sample(spots, min(len(spots), rng.choice((1, 2)))), reverse=True)
    for start, end, word in chosen:
        text = text[:start] + rng.choice(_synonyms(word)) + text[end:]
    return text


METHODS = ("mixed", "rules", "wordnet")


def _wordnet_available() -> bool:
    """WordNet can be read; without it `mixed` rewording falls back to the rules, with a warning once."""
    try:
        wordnet()
    except QatuneError as exc:
        if not _warned:
            _warned.append(True)
            warn(f"rewording questions by rules only: {exc}")
        return False
    return True


_warned: list[bool] = []


def reword(question: str, rng: random.Random, method: str = "mixed") -> str | None:
    """One rewording: WordNet synonyms and/or a rewrite of the question's form, per `method` (synonyms
    first, so the words a rewrite adds are never swapped)."""
    text: str | None = question
    if method == "wordnet" or (method == "mixed" and rng.random() < 0.5):
        text = variant(question, rng) or (question if method == "mixed" else None)
    if text is not None and method in ("mixed", "rules"):
        text = rewrite(text, rng) or (text if method == "mixed" else None)
    return text if text and question_key(text) != question_key(question) else None


def rewordings(
    pairs: list[dict], n: int, seed: int, taken: set[str], *, method: str = "mixed", tag: str = "aug"
) -> list[dict]:
    """Up to `n` new wordings per pair (answer unchanged); a wording whose normalized form is in `taken`
    (training, held-out or earlier generated questions) is skipped, and each one made is added to it."""
    if n <= 0 or not pairs:
        return []
    if method == "mixed" and not _wordnet_available():
        method = "rules"
    elif method == "wordnet":
        wordnet()
    out = []
    for pair in pairs:
        rng = random.Random(f"{seed}:{tag}:{pair['id']}")
        made = 0
        for _ in range(n * 6):
            if made == n:
                break
            text = reword(pair["question"], rng, method)
            if text is None:
                continue
            key = question_key(text)
            if key in taken:
                continue
            taken.add(key)
            made += 1
            out.append(
                {
                    "id": f"{pair['id']}-{tag}{made}",
                    "question": text,
                    "answer": pair["answer"],
                    "source_row": pair["source_row"],
                    "augmented_from": pair["id"],
                }
            )
    return out
