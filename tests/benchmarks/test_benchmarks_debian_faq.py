"""benchmarks/debian_faq.py: the Debian FAQ's HTML -> one question/answer pair per entry, with paragraphs, list
items, command lines and footnotes kept as plain text; and the committed pairs and reworded test questions."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from qatune.data.clean import clean_text, question_key

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = BENCH / "data"

# Shaped like the DocBook XSL output the package ships: a chapter page, entries as nested div.section with the
# number in the heading, a table of contents per chapter and per entry, footnotes at the end of the page.
CHAPTER = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter 7. Packages</title></head><body>
<div class="navheader"><table><tr><th>Chapter 7. Packages</th></tr></table></div>
<div class="chapter"><div class="titlepage"><div><div><h1 class="title"><a id="pkg"></a>Chapter 7. Packages</h1>
</div></div></div>
<div class="toc"><p><strong>Table of Contents</strong></p><dl class="toc"><dt><span class="section">
<a href="#hold">7.1. How do I put a package on hold?</a></span></dt></dl></div>
<p>This chapter introduction is not an entry.</p>
<div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="hold"></a>7.1. How do I put a
package on hold?</h2></div></div></div><p>
There are two ways, with <span class="command"><strong>dpkg</strong></span> or
<a class="ulink" href="https://example.org/apt" target="_top">apt</a>.
</p><p>With dpkg, export the selections:</p><pre class="screen">
dpkg --get-selections \\* &gt; selections.txt
</pre><p>then change these lines:</p><div class="itemizedlist"><ul class="itemizedlist" type="disc">
<li class="listitem"><p>libc6 install</p></li><li class="listitem"><p>
to <code class="literal">libc6 hold</code>,
see <a class="xref" href="#status" title="7.2">Section 7.2, \u201cStatus\u201d</a>.</p><div class="itemizedlist">
<ul class="itemizedlist"><li class="listitem"><p>one level down</p></li></ul></div></li></ul></div>
<p>The mirror list is at <a class="ulink" href="https://www.debian.org/mirror/">https://www.debian.org/mirror/</a>.
<a href="#ftn.x1" class="footnote" id="x1"><sup class="footnote">[1]</sup></a></p>
</div>
<div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="status"></a>7.2. Status</h2>
</div></div></div><div class="toc"><dl><dt><span class="section"><a href="#dpkg">7.2.1. dpkg</a></span></dt>
</dl></div><div class="variablelist"><dl class="variablelist"><dt><span class="term">install</span></dt><dd><p>
the user wants it.</p></dd><dt><span class="term">hold</span></dt><dd><p>keep it<br />as it is.</p></dd></dl></div>
<div class="section"><div class="titlepage"><div><div><h3 class="title"><a id="dpkg"></a>7.2.1. dpkg</h3>
</div></div></div><p>The low-level tool.</p></div>
</div>
<div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="ptr"></a>7.3. Where is more?</h2>
</div></div></div><p>See <a class="xref" href="#hold">Section 7.1, \u201cHow do I put a package on hold?\u201d</a>.</p>
</div>
<div class="section"><div class="titlepage"><div><div><h2 class="title"><a id="empty"></a>7.4. Other tools</h2>
</div></div></div><div class="section"><div class="titlepage"><div><div><h3 class="title"><a id="ddeb"></a>7.4.1.
Odd tool</h3></div></div></div><p>It has no question.</p></div></div>
<div class="footnotes"><br /><hr /><div id="ftn.x1" class="footnote"><p><a href="#x1" class="para">
<sup class="para">[1] </sup></a> Mirrors are\n   volunteers.</p></div></div>
</div></body></html>
"""

FIRST_CHAPTER = """<html><body><div class="chapter"><div class="titlepage"><h1 class="title">Chapter 1. Basics</h1>
</div><div class="section"><div class="titlepage"><h2 class="title"><a id="what"></a>1.1. What is it?</h2></div>
<p>An operating system.</p></div></div></body></html>"""

HOLD_ANSWER = """There are two ways, with dpkg or apt (https://example.org/apt).

With dpkg, export the selections:

dpkg --get-selections \\* > selections.txt

then change these lines:

- libc6 install
- to libc6 hold, see Section 7.2, \u201cStatus\u201d.
* one level down

The mirror list is at https://www.debian.org/mirror/. [1]

[1] Mirrors are volunteers."""


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.fixture
def faq_dir(tmp_path):
    folder = tmp_path / "FAQ"
    folder.mkdir()
    (folder / "pkg-basics.en.html").write_text(CHAPTER, encoding="utf-8")
    (folder / "zz-basics.en.html").write_text(FIRST_CHAPTER, encoding="utf-8")  # chapter 1, named to sort last
    (folder / "index.en.html").write_text("<html><body><h1>The FAQ</h1></body></html>", encoding="utf-8")
    (folder / "pkg-basics.de.html").write_text(CHAPTER.replace("How do I put", "Wie"), encoding="utf-8")
    return folder


def test_entries_become_pairs_with_their_text_kept_as_plain_text(faq_dir):
    import debian_faq

    entries, dropped = debian_faq.build(faq_dir, "en")
    by_number = {e.number: e for e in entries}
    assert [e.number for e in entries] == ["1.1", "7.1", "7.2", "7.2.1", "7.4.1"]  # chapter order, not file names
    hold = by_number["7.1"]
    assert hold.question == "How do I put a package on hold?"  # number dropped, line break in the heading joined
    assert hold.section == "Packages"
    assert hold.answer == HOLD_ANSWER  # paragraphs, the command line, list items, link URLs, the footnote
    status = by_number["7.2"]
    # a term list: one paragraph per term; a <br> is a line break; the sub-entry's text is not in its parent's
    assert status.answer == "install\nthe user wants it.\n\nhold\nkeep it\nas it is."
    assert status.question == "What does the Debian FAQ say about Status?"  # not a question, not in QUESTIONS
    assert by_number["7.2.1"].question == debian_faq.QUESTIONS["dpkg"]  # the hand-written question by anchor
    assert by_number["7.2.1"].answer == "The low-level tool."
    assert by_number["7.4.1"].question == "What does the Debian FAQ say about Odd tool?"
    assert "This chapter introduction" not in " ".join(e.answer for e in entries)
    assert len(dropped) == 2
    assert "7.3" in dropped[0] and "only a pointer" in dropped[0]
    assert "7.4" in dropped[1] and "no text of its own" in dropped[1]


def test_other_languages_keep_their_headings_and_sub_entries_stay_apart(faq_dir):
    import debian_faq

    entries, _ = debian_faq.build(faq_dir, "de")
    questions = {e.number: e.question for e in entries}
    assert questions["7.1"] == "Wie a package on hold?"
    assert questions["7.2"] == "Status"
    assert questions["7.2.1"] == "Status — dpkg"  # a sub-entry's heading after its parent's


def test_the_script_writes_the_same_csv_every_time_and_reports_lengths(faq_dir, tmp_path, capsys):
    import debian_faq

    out = tmp_path / "pairs.csv"
    assert debian_faq.main(["--faq-dir", str(faq_dir), "--out", str(out), "--no-tokens"]) == 0
    first = out.read_bytes()
    printed = capsys.readouterr().out
    assert "5 pairs written" in printed and "2 entries dropped" in printed
    lengths = sorted(len(e.answer) for e in debian_faq.build(faq_dir, "en")[0])
    assert f"answer chars: min {lengths[0]}, median {lengths[2]}, p90 {lengths[4]}, max {lengths[4]}" in printed
    assert debian_faq.main(["--faq-dir", str(faq_dir), "--out", str(out), "--no-tokens"]) == 0
    assert out.read_bytes() == first
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == ["question", "answer", "section", "entry"]
    assert rows[1]["answer"] == HOLD_ANSWER


def test_a_missing_package_is_one_line_naming_the_apt_command(tmp_path, capsys):
    import debian_faq

    code = debian_faq.main(["--faq-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv"), "--lang", "fr"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "apt-get install debian-faq-fr" in err
    assert not (tmp_path / "x.csv").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "page.en.html").write_text("<html><body><p>Not the FAQ.</p></body></html>")
    assert debian_faq.main(["--faq-dir", str(tmp_path / "other"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no FAQ entries" in capsys.readouterr().err


def _committed() -> tuple[list[dict], list[dict]]:
    pairs = list(csv.DictReader((DATA / "debian_faq.csv").open(encoding="utf-8")))
    test = list(csv.DictReader((DATA / "debian_faq_test.csv").open(encoding="utf-8")))
    return pairs, test


def test_committed_test_questions_reword_committed_pairs_with_their_answers_unchanged():
    pairs, test = _committed()
    by_entry = {p["entry"]: p for p in pairs}
    pair_questions = {question_key(p["question"]) for p in pairs}
    assert len(test) >= 36
    assert len({t["entry"] for t in test}) == len(test)  # one question per entry
    assert len({p["section"] for p in pairs if p["entry"] in {t["entry"] for t in test}}) == len(
        {p["section"] for p in pairs}
    )  # every chapter is asked about
    for t in test:
        assert t["answer"] == by_entry[t["entry"]]["answer"], t["question"]
        assert question_key(t["question"]) not in pair_questions, t["question"]
    assert {t["answer"] for t in test} <= {p["answer"] for p in pairs}


def test_committed_pairs_are_what_qatune_trains_on():
    """Every question distinct and every answer unchanged by qatune's cleaning, so no pair is merged or altered."""
    pairs, test = _committed()
    assert len({question_key(p["question"]) for p in pairs}) == len(pairs)
    for row in pairs + test:
        assert clean_text(row["answer"], multiline=True) == row["answer"], row["question"]
        assert clean_text(row["question"]) == row["question"]


def test_the_committed_pairs_are_the_build_of_the_installed_package(tmp_path):
    """Rebuilt from the installed package when it is the version the file was built from (benchmarks/data/
    README.md); any other state is reported as a skip with its reason."""
    import debian_faq

    if shutil.which("dpkg-query") is None:
        pytest.skip("no dpkg-query: not a Debian system, the committed file cannot be rebuilt here")
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", "debian-faq"], capture_output=True, text=True
    )
    if query.returncode != 0 or not query.stdout.startswith("install ok installed"):
        pytest.skip("debian-faq is not installed (apt-get install debian-faq)")
    version = query.stdout.split()[-1]
    if version != "11.1":
        pytest.skip(f"debian-faq {version} is installed; the committed file was built from 11.1")
    out = tmp_path / "pairs.csv"
    assert debian_faq.main(["--out", str(out), "--no-tokens"]) == 0
    assert out.read_bytes() == (DATA / "debian_faq.csv").read_bytes()
