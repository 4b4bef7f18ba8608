"""`qatune chat`: scripted through a pipe it prints exactly one greedy answer line per question; in a
terminal it streams, keeps the conversation, and obeys /model, /compare, /reset and /quit."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from adapter_runs import QUESTIONS, make_run
from qatune.chat import Session, chat, one_line, parse_command, scripted, visible
from qatune.config import load_for_run
from qatune.console import QatuneError
from qatune.generate import load_engine
from qatune.prompts import messages_for

TOKENS = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory, lively_model_dir):
    """Adapters on the prompt-sensitive tiny model: a dropped history or a wrong prompt changes the answer."""
    return make_run(tmp_path_factory.mktemp("chat") / "run", lively_model_dir)


@pytest.fixture(scope="module")
def engine(run):
    return load_engine(run, load_for_run(run, None, {}, save=False))


def _greedy(engine, name, question, tokens=TOKENS):
    return engine.generate(name, [messages_for(question)], max_new_tokens=tokens)[0].text


def test_parse_command_only_knows_its_commands():
    assert parse_command("/model best") == ("/model", "best")
    assert parse_command("/compare  How?  ") == ("/compare", "How?")
    assert parse_command("/quit") == ("/quit", "")
    assert parse_command("/etc/hosts: what is it?") is None
    assert parse_command("What is /reset?") is None


def test_terminal_output_shows_control_characters_as_escapes():
    assert visible("ok\x1b]0;pwned\x07 \x1b[2J\r\tend\n") == "ok\\x1b]0;pwned\\x07 \\x1b[2J\\x0d\tend\n"


def test_one_line_flattens_line_breaks():
    assert one_line("a\nb\r\nc\n") == "a b c"


def test_scripted_answers_one_line_per_question_and_obeys_commands(engine):
    lines = [QUESTIONS[0], "", "/model epoch-2", QUESTIONS[0], "/compare " + QUESTIONS[1], "/quit", "never"]
    out = io.StringIO()
    scripted(Session(engine, "epoch-1", TOKENS), lines, out)
    got = out.getvalue().splitlines()
    assert got == [
        one_line(_greedy(engine, "epoch-1", QUESTIONS[0])),
        one_line(_greedy(engine, "epoch-2", QUESTIONS[0])),
        "base: " + one_line(_greedy(engine, "base", QUESTIONS[1])),
        "epoch-2: " + one_line(_greedy(engine, "epoch-2", QUESTIONS[1])),
    ]


def test_reply_streams_and_keeps_history(engine):
    session = Session(engine, "epoch-2", TOKENS)
    out = io.StringIO()
    first = session.reply(QUESTIONS[0], out, threading.Event())
    assert out.getvalue() == first == _greedy(engine, "epoch-2", QUESTIONS[0])
    second = session.reply(QUESTIONS[1], io.StringIO(), threading.Event())
    history = [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": first}]
    with_history = engine.generate("epoch-2", [messages_for(QUESTIONS[1], history=history)], max_new_tokens=TOKENS)[
        0
    ].text
    assert second == with_history
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(QatuneError, match="unknown model 'epoch-7'"):
        session.switch("epoch-7")


@pytest.mark.parametrize("name", ["epoch-9", "../models", "best"])
def test_unknown_or_unsafe_model_names_are_refused(run, name):
    with pytest.raises(QatuneError):
        chat(run, name, stdin=io.StringIO(""), stdout=io.StringIO())


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "TERM": "dumb"}


def test_cli_chat_scripted_through_stdin(run, engine):
    questions = QUESTIONS[:4]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qatune",
            "chat",
            "--run",
            str(run),
            "--model",
            "epoch-1",
            "--max-new-tokens",
            str(TOKENS),
        ],
        input="\n".join(questions) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [one_line(_greedy(engine, "epoch-1", q)) for q in questions]


def test_cli_chat_bad_model_is_one_line_error(run):
    proc = subprocess.run(
        [sys.executable, "-m", "qatune", "chat", "--run", str(run), "--model", "epoch-5"],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no model 'epoch-5'")
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_cli_chat_in_a_terminal(run, engine):
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qatune",
            "chat",
            "--run",
            str(run),
            "--model",
            "epoch-2",
            "--max-new-tokens",
            str(TOKENS),
        ],
        stdin=child,
        stdout=child,
        stderr=child,
        env=_env(),
        close_fds=True,
    )
    os.close(child)
    seen = b""

    def prompts(count: int, seconds: float = 60) -> str:
        """Read until the `you>` prompt has appeared `count` times; return everything read so far."""
        nonlocal seen
        deadline = time.monotonic() + seconds
        while seen.count(b"you>") < count and time.monotonic() < deadline:
            try:
                seen += os.read(main, 65536)
            except OSError:
                break
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))

    try:
        assert "you>" in prompts(1)
        os.write(main, (QUESTIONS[0] + "\n").encode())
        first = prompts(2).rsplit("you>", 2)[1]
        os.write(main, b"/compare " + QUESTIONS[1].encode() + b"\n")
        compare = prompts(3).rsplit("you>", 2)[1]
        os.write(main, b"/quit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    assert "epoch-2>" in first and visible(_greedy(engine, "epoch-2", QUESTIONS[0]))[:6] in first
    assert "base" in compare and "epoch-2" in compare
