"""A long-answer question/answer file from the Debian FAQ (the Debian package `debian-faq`).

One pair per FAQ entry (every numbered section at any depth, e.g. 3.1 and 3.1.4), in the FAQ's order, as a CSV
with the columns question, answer, section (the chapter's title) and entry (the entry's number). The question is
the entry's heading without its number; a heading that is not a question ("8.1.1. dpkg", "16.1. Authors") gets
the hand-written question QUESTIONS holds for its anchor (English only: other languages keep the heading, after
the parent entry's heading for a sub-entry; an English heading missing from QUESTIONS becomes "What does the
Debian FAQ say about HEADING?"). The answer is the entry's own text, what stands under its heading before its
first sub-entry (a sub-entry is a pair of its own): paragraphs separated by a blank line, list items as "- item"
lines ("* item" one level down, "1. item" in numbered lists), a term list as one paragraph per term (the term's
line, then its text), command and file blocks line by line, a link as "text (URL)" as in the FAQ's own plain-text
edition, and the entry's footnotes as last paragraphs ("[3] ..."). Spaces inside a line are collapsed and lines
start at the left margin, as qatune's reader does to every answer, so the file holds exactly what is trained.

Dropped, and listed when the script runs:
- entries with no text of their own (in 11.1: "8.1.6. Other package management tools", which only holds 8.1.6.1);
- entries whose text is only a pointer to other sections of the FAQ (a cross-reference and at most 4 other words,
  e.g. "See Section 6.1."): such an answer says nothing by itself (none in 11.1);
- chapter introductions (the text under a chapter title before its first entry) are not entries and are not read.

    python benchmarks/debian_faq.py --out benchmarks/data/debian_faq.csv     # needs: apt-get install debian-faq
    python benchmarks/debian_faq.py --lang de --out /tmp/faq_de.csv           # needs: apt-get install debian-faq-de

The output depends only on the installed package: the same version gives the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import lxml.html  # a dependency of sacrebleu, which qatune requires

FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
OUT = Path(__file__).resolve().parent / "data" / "debian_faq.csv"

# English questions for the entries whose heading is not a question, keyed by the entry's anchor (its HTML id)
QUESTIONS = {
    "dpkg": "What is dpkg and how is it used?",
    "apt-get": "What is APT and how are apt, apt-get and apt-cache used?",
    "aptitude": "What is aptitude?",
    "synaptic": "What is synaptic?",
    "tasksel": "What is tasksel?",
    "dpkg-deb": "What is dpkg-deb used for?",
    "aptitude-upgrade": "How do I keep a Debian system up to date with aptitude?",
    "apt": "How do I keep a Debian system up to date with apt-get and apt-cdrom?",
    "s12.2.1": "Which Debian mailing lists are there and how do I subscribe to them?",
    "s12.2.2": "Is there a web forum for Debian users?",
    "s12.2.3": "Is there a Debian wiki?",
    "s12.2.4": "Can I ask the maintainer of a package a question directly?",
    "s12.2.5": "Which Usenet newsgroups can I post Debian questions to?",
    "SPI": "What is Software in the Public Interest?",
    "TrustedOrgs": "Which other organizations hold assets for Debian?",
    "hardening": "What is planned for hardening the system in the next major Debian release?",
    "i18n": "What support for non-English users is expected in the next major Debian release?",
    "di": "What improvements to the Debian Installer are expected in the next major release?",
    "morearches": "Will the next major Debian release run on more architectures?",
    "morekernels": "Will the next major Debian release run on more kernels?",
    "authors": "Who wrote the Debian FAQ?",
    "feedback": "How can I send comments or additions to the Debian FAQ?",
    "latest": "Where can I get the latest version of the Debian FAQ?",
    "docformat": "In what format is the Debian FAQ written?",
}

_NUMBERED = re.compile(r"^\s*(\d+(?:\.\d+)*)\.?\s+(.*)$", re.S)
_BLOCK = {"p", "div", "ul", "ol", "dl", "pre", "table", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}
_BR = "\x00"  # a forced line break inside a paragraph (<br>), kept through whitespace collapsing
_POINTER_WORDS = 4
_BULLETS = ("-", "*", "+")  # list items by nesting depth (qatune removes indentation)


class FaqError(Exception):
    """The FAQ is not installed, or cannot be turned into distinct pairs: one line for the user."""


@dataclass(frozen=True)
class Entry:
    number: str
    anchor: str
    heading: str
    question: str
    answer: str
    section: str


def package_name(lang: str) -> str:
    return "debian-faq" if lang == "en" else f"debian-faq-{lang}"


def chapter_files(faq_dir: Path, lang: str) -> list[Path]:
    """The chapter pages of one language: `*.en.html` in FAQ_DIR, `*.LANG.html` in FAQ_DIR/LANG for the others."""
    for folder in (faq_dir, faq_dir / lang):
        pages = sorted(p for p in folder.glob(f"*.{lang}.html") if not p.name.startswith("index."))
        if pages:
            return pages
    raise FaqError(
        f"the Debian FAQ ({lang}) is not installed: no *.{lang}.html under {faq_dir}; "
        f"install it with `apt-get install {package_name(lang)}`"
    )


def _tidy(text: str) -> str:
    """qatune's answer cleaning: spaces inside a line collapsed, lines trimmed, at most one blank line in a row."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _Renderer:
    """HTML of one entry -> plain text; collects the footnotes the entry cites."""

    def __init__(self, footnotes: dict[str, object]):
        self.footnotes = footnotes
        self.cited: list[str] = []

    def inline(self, el) -> str:
        parts = [el.text or ""]
        for child in el:
            if isinstance(child.tag, str):
                parts.append(self._inline_child(child))
            parts.append(child.tail or "")
        return "".join(parts)

    def _inline_child(self, el) -> str:
        tag, cls = el.tag, el.get("class") or ""
        if tag == "br":
            return _BR
        if tag in ("script", "style"):
            return ""
        text = self.inline(el)
        if tag == "a" and cls == "footnote":
            target = (el.get("href") or "").lstrip("#")
            if target in self.footnotes and target not in self.cited:
                self.cited.append(target)
            return " ".join(text.split())
        href = el.get("href") or ""
        if tag == "a" and cls == "ulink" and href and not href.startswith("mailto:"):
            shown = " ".join(text.split())
            return text if href.rstrip("/") in shown or not shown else f"{text} ({href})"
        return text

    @staticmethod
    def paragraph(text: str) -> str:
        return re.sub(f" ?{_BR} ?", "\n", " ".join(text.split())).strip()

    def blocks(self, el, skip=lambda child: False) -> list[str]:
        """Block texts of el's content, in order; inline runs between blocks become paragraphs."""
        out: list[str] = []
        run = [el.text or ""]

        def flush():
            text = self.paragraph("".join(run))
            if text:
                out.append(text)
            run.clear()

        for child in el:
            if not isinstance(child.tag, str):
                run.append(child.tail or "")
                continue
            if skip(child):
                run.append(child.tail or "")
                continue
            if child.tag in _BLOCK or child.tag in ("li", "dt", "dd"):
                flush()
                out.extend(self.block(child))
            else:
                run.append(self._inline_child(child))
            run.append(child.tail or "")
        flush()
        return out

    def block(self, el) -> list[str]:
        tag = el.tag
        if tag == "hr":
            return []
        if tag == "pre":
            lines = el.text_content().strip("\n").split("\n")
            return ["\n".join(line.rstrip() for line in lines)] if any(s.strip() for s in lines) else []
        if tag in ("ul", "ol"):
            items = [c for c in el if c.tag == "li"]
            start = int(el.get("start") or 1)
            depth = sum(1 for a in el.iterancestors("ul", "ol"))
            bullet = _BULLETS[min(depth, len(_BULLETS) - 1)]
            marks = [f"{start + i}." if tag == "ol" else bullet for i in range(len(items))]
            rendered = ["\n".join(self.blocks(li)) for li in items]
            return ["\n".join(f"{mark} {text}" for mark, text in zip(marks, rendered, strict=True) if text)]
        if tag == "dl":  # one paragraph per term: the term's line, then its definition
            groups: list[list[str]] = []
            after_dd = True
            for child in el:
                if child.tag not in ("dt", "dd"):
                    continue
                if not groups or (child.tag == "dt" and after_dd):  # terms in a row share one definition
                    groups.append([])
                groups[-1] += self.blocks(child)
                after_dd = child.tag == "dd"
            return ["\n".join(g) for g in groups if g]
        return self.blocks(el)


def _is_entry(el) -> bool:
    return el.tag == "div" and (el.get("class") or "").split()[:1] == ["section"]


def _not_own(el) -> bool:
    """A part of an entry that is not its own text: its title, its table of contents, a sub-entry."""
    return _is_entry(el) or (el.get("class") or "") in ("titlepage", "toc")


def _heading(entry) -> tuple[str, str, str]:
    """(number, title, anchor) of an entry: "3.1.4", "If I were to ...?", "s3.1.4"."""
    h = next(entry.iter("h1", "h2", "h3", "h4", "h5", "h6"), None)
    text = " ".join(h.text_content().split()) if h is not None else ""
    anchor = next((a.get("id") for a in (h.iter("a") if h is not None else ()) if a.get("id")), None)
    match = _NUMBERED.match(text)
    number, title = (match.group(1), match.group(2)) if match else ("", text)
    return number, title, anchor or entry.get("id") or ""


def _question(title: str, anchor: str, lang: str, parent: str) -> str:
    """The heading when it asks something; else the hand-written English question, or (other languages) the
    heading after its parent entry's, so that two sub-entries both titled "aptitude" stay apart."""
    if "?" in title:
        return title
    if lang == "en":
        return QUESTIONS.get(anchor) or f"What does the Debian FAQ say about {title}?"
    return f"{parent} — {title}" if parent else title


def _chapter_title(root) -> str:
    h1 = root.find(".//h1")
    return re.sub(r"^\D*?\d+\.\s+", "", " ".join(h1.text_content().split())) if h1 is not None else ""


def parse_chapter(path: Path, lang: str = "en") -> tuple[list[Entry], list[str]]:
    """The entries of one chapter page, in document order, and one line for each entry dropped."""
    root = lxml.html.parse(str(path)).getroot()
    section = _chapter_title(root)
    footnotes = {fn.get("id"): fn for fn in root.iter("div") if fn.get("class") == "footnote" and fn.get("id")}
    entries: list[Entry] = []
    dropped: list[str] = []
    for div in filter(_is_entry, root.iter("div")):
        number, title, anchor = _heading(div)
        parent = next((_heading(a)[1] for a in div.iterancestors("div") if _is_entry(a)), "")
        renderer = _Renderer(footnotes)
        own = renderer.blocks(div, skip=_not_own)
        own += [text for target in renderer.cited for text in _Renderer({}).blocks(footnotes[target])]
        answer = _tidy("\n\n".join(own))
        label = f"{path.name} {number or anchor} {title!r}"
        own_links = [a for child in div if isinstance(child.tag, str) and not _not_own(child) for a in child.iter("a")]
        xref_words = sum(len(a.text_content().split()) for a in own_links if "xref" in (a.get("class") or ""))
        if not answer:
            dropped.append(f"{label}: no text of its own")
        elif xref_words and len(answer.split()) - xref_words <= _POINTER_WORDS:
            dropped.append(f"{label}: only a pointer to other sections ({answer!r})")
        else:
            entries.append(Entry(number, anchor, title, _question(title, anchor, lang, parent), answer, section))
    return entries, dropped


def _chapter_key(path: Path) -> tuple[int, str]:
    h1 = lxml.html.parse(str(path)).getroot().find(".//h1")
    found = re.search(r"\d+", h1.text_content()) if h1 is not None else None
    return (int(found.group()) if found else 10**6, path.name)


def build(faq_dir: Path = FAQ_DIR, lang: str = "en") -> tuple[list[Entry], list[str]]:
    """Every kept entry in the FAQ's order (chapter by chapter), and the dropped ones with their reason."""
    entries: list[Entry] = []
    dropped: list[str] = []
    for page in sorted(chapter_files(faq_dir, lang), key=_chapter_key):
        kept, gone = parse_chapter(page, lang)
        entries += kept
        dropped += gone
    if not entries:
        raise FaqError(f"no FAQ entries (numbered div.section headings) in the *.{lang}.html pages under {faq_dir}")
    seen: dict[str, str] = {}
    for e in entries:
        key = " ".join(re.sub(r"[\W_]+", " ", e.question.casefold()).split())
        if key in seen:
            raise FaqError(f"entries {seen[key]} and {e.number} would ask the same question: {e.question!r}")
        seen[key] = e.number
    return entries, dropped


def write_csv(entries: list[Entry], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["question", "answer", "section", "entry"])
        for e in entries:
            writer.writerow([e.question, e.answer, e.section, e.number])


def distribution(values: list[int]) -> dict[str, float]:
    """min, median, p90 (nearest rank) and max."""
    ordered = sorted(values)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {"min": ordered[0], "median": statistics.median(ordered), "p90": p90, "max": ordered[-1]}


def _token_lengths(answers: list[str]) -> tuple[list[int] | None, str]:
    """Answer lengths in tokens of qatune's default model, when its tokenizer can be loaded here."""
    try:
        from qatune.models.load import load_tokenizer
        from qatune.models.resolve import resolve_model

        tokenizer = load_tokenizer(resolve_model("default"))
    except Exception as exc:  # optional figure: any failure only means no token counts
        return None, f"not counted ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
    return [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers], "default model's tokenizer"


def _fmt(stats: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in stats.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"CSV to write (default {OUT})")
    parser.add_argument("--lang", default="en", help="FAQ language: en (debian-faq) or e.g. de (debian-faq-de)")
    parser.add_argument("--faq-dir", type=Path, default=FAQ_DIR, help=f"where the FAQ is installed ({FAQ_DIR})")
    parser.add_argument("--no-tokens", action="store_true", help="skip the token counts (no model is loaded)")
    args = parser.parse_args(argv)
    try:
        entries, dropped = build(args.faq_dir, args.lang)
    except FaqError as exc:
        print(f"debian_faq.py: {exc}", file=sys.stderr)
        return 2
    write_csv(entries, args.out)
    print(f"{len(entries)} pairs written to {args.out}; {len(dropped)} entries dropped")
    for line in dropped:
        print(f"  dropped {line}")
    answers = [e.answer for e in entries]
    print(f"answer chars: {_fmt(distribution([len(a) for a in answers]))}")
    if not args.no_tokens:
        tokens, how = _token_lengths(answers)
        print(f"answer tokens: {_fmt(distribution(tokens))} ({how})" if tokens else f"answer tokens: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
