"""The comparison page in headless Chromium: ask a question, see the base and the fine-tuned answers side
by side; markup planted in questions and answers shows as text and never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from qatune.models.load import load_tokenizer
from qatune.serve.app import Settings, create_app
from serve_harness import ScriptedEngine, running

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PLANTED = '<img src=x onerror="window.__xss=1"> </td><script>window.__xss=2</script>'
KEY = "page-key-123"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def _ask(page, question: str) -> None:
    page.fill("#question", question)
    page.click("#submit")
    page.wait_for_function(
        "() => document.getElementById('status').textContent === '' && "
        "document.getElementById('answer-tuned').textContent !== ''",
        timeout=20_000,
    )


def test_question_shows_base_and_tuned_answers(browser, tokenizer, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.html").write_text("<html><body><h1>the report</h1></body></html>")
    engine = ScriptedEngine(tokenizer, ["epoch-1", "best"], delay=0.01)
    with running(create_app(Settings(run=tmp_path, engine=engine))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#model option[value='best']", state="attached")
        assert page.input_value("#model") == "best"
        _ask(page, "Who teaches the course?")
        assert page.text_content("#answer-base") == "base answers: Who teaches the course?"
        assert page.text_content("#answer-tuned") == "best answers: Who teaches the course?"
        assert page.text_content("#tuned-title") == "best"
        page.select_option("#model", "epoch-1")
        _ask(page, "When?")
        assert page.text_content("#answer-tuned") == "epoch-1 answers: When?"
        assert page.is_visible("#report-link")
        page.close()


def test_planted_markup_renders_as_text(browser, tokenizer):
    question = "Is <b>this</b> escaped?"
    engine = ScriptedEngine(
        tokenizer, ["best"], answers={("best", question): PLANTED, ("base", question): "</div><svg onload=alert(1)>"}
    )
    with running(create_app(Settings(engine=engine))) as url:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "/")
        page.wait_for_selector("#model option[value='best']", state="attached")
        _ask(page, question)
        assert page.text_content("#answer-tuned") == PLANTED
        assert page.text_content("#answer-base") == "</div><svg onload=alert(1)>"
        assert page.text_content("#asked") == "Q: " + question
        assert page.query_selector_all(".answers img, .answers script, .answers svg, #asked b") == []
        assert page.evaluate("() => window.__xss === undefined") and not dialogs
        page.close()


def test_page_asks_for_the_key_and_keeps_it_in_memory(browser, tokenizer, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.html").write_text("<html><body><h1>keyed report</h1></body></html>")
    engine = ScriptedEngine(tokenizer, ["best"])
    with running(create_app(Settings(run=tmp_path, engine=engine, api_key=KEY))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-box", state="visible")
        assert page.locator("#model option").count() == 0
        page.fill("#api-key", KEY)
        page.click("#key-use")
        page.wait_for_selector("#model option[value='best']", state="attached")
        assert page.input_value("#api-key") == ""
        _ask(page, "hello")
        assert page.text_content("#answer-tuned") == "best answers: hello"
        assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
        assert KEY not in page.evaluate("() => document.cookie")
        page.click("#report-link")
        frame = page.frame_locator("#report-frame")
        assert frame.locator("h1").text_content(timeout=10_000) == "keyed report"
        page.reload()
        page.wait_for_selector("#key-box", state="visible")  # a reload forgets the key
        page.close()
