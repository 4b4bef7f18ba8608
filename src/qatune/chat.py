"""`qatune chat`: talk to a run's models in the terminal. A TTY gets streamed answers with multi-turn
history and commands; a pipe gets one answer line per question line, with nothing else on stdout."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from qatune import console
from qatune.console import QatuneError
from qatune.prompts import messages_for
from qatune.rag import closed_book, grounded_name

BASE = "base"
COMMANDS = ("/reset", "/model", "/compare", "/quit", "/help")
HELP = (
    "/reset forgets the conversation, /model NAME switches model, /compare QUESTION shows base and "
    "this model side by side, /quit leaves (Ctrl-C stops an answer, Ctrl-D quits)"
)


@dataclass
class Session:
    """The chosen model and the conversation so far (user and assistant turns)."""

    engine: Any
    model: str
    max_new_tokens: int
    history: list[dict] = field(default_factory=list)
    guard: Any = None  # trust.guard.Guard: abstains as eval does (fallback, fact check); None answers as is

    def switch(self, name: str) -> None:
        if name not in self.engine.names:
            raise QatuneError(f"unknown model {name!r}; available: {', '.join(self.engine.names)}")
        self.model = name

    def answer(self, question: str, model: str | None = None) -> str:
        """A single-turn greedy answer (no history), as eval and the API compute it."""
        return self._guarded(model or self.model, messages_for(question))

    def _guarded(self, model: str, conversation: list[dict]) -> str:
        if self.guard is None:
            gen = self.engine.generate(model, [conversation], max_new_tokens=self.max_new_tokens, batch_size=1)
            return gen[0].text
        from qatune.trust.run import engine_answers

        verdict, _ = engine_answers(
            self.engine, self.guard, model, [conversation], max_new_tokens=self.max_new_tokens, batch_size=1
        )[0]
        return verdict.text

    def reply(self, question: str, out: TextIO, cancel: threading.Event, visible_only: bool = False) -> str:
        """Stream the next turn of the conversation to `out`; it joins the history (even when cut short).
        `visible_only` shows control characters as escapes (a terminal must not obey model output). A guarded
        fine-tuned or grounded model's answer is checked whole before it is shown, as eval checks it."""
        if self.guard is not None and self.model != BASE:
            text = self._guarded(self.model, messages_for(question, history=self.history)).strip()
            out.write(visible(text) if visible_only else text)
            out.flush()
            self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            return text
        shown, started = [], False
        try:
            for piece in self.engine.stream(
                self.model,
                messages_for(question, history=self.history),
                max_new_tokens=self.max_new_tokens,
                cancel=cancel,
            ):
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                shown.append(piece)
                out.write(visible(piece) if visible_only else piece)
                out.flush()
        finally:
            text = "".join(shown).strip()
            self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        return text


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """Model text made safe for a terminal: control characters (escape sequences) are shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def parse_command(line: str) -> tuple[str, str] | None:
    """('/model', 'best') for command lines; None for questions (any other line, even one starting '/')."""
    word, _, rest = line.strip().partition(" ")
    return (word, rest.strip()) if word in COMMANDS else None


def one_line(text: str) -> str:
    """An answer as one output line: line breaks inside it become spaces."""
    return " ".join(text.splitlines()).strip()


def chat(
    run: Path,
    model_name: str = "best",
    max_new_tokens: int = 256,
    *,
    rag: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """`rag`: answer with the top-k retrieved training pairs in the prompt (the grounded model of NAME)."""
    engine, guard = _load(run, model_name)
    if rag:
        model_name = grounded_name(model_name)
        if model_name not in engine.names:
            raise QatuneError(
                f"--rag needs the run's retrieval index ({run}/index), written by `qatune train` with grounded "
                "training (the default); train again, or chat without --rag"
            )
    session = Session(engine, model_name, max_new_tokens, guard=guard)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if stdin.isatty() and stdout.isatty():
        interactive(session, stdin, stdout)
    else:
        scripted(session, stdin, stdout)


def _load(run: Path, model_name: str) -> tuple[Any, Any]:
    """The run's engine and the guard its models abstain with."""
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.rundir import RunDir, check_name
    from qatune.trust.run import run_guard

    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found; check --run", path=rundir.root)
    available = rundir.adapter_names()
    closed = check_name(closed_book(model_name), "model name")
    if closed != BASE and closed not in available:
        raise QatuneError(f"no model {model_name!r} in {rundir.models_dir}; available: {', '.join([BASE, *available])}")
    config = load_for_run(rundir.root, None, {}, save=False)
    return load_engine(rundir.root, config), run_guard(rundir, config)


def scripted(session: Session, lines: Iterable[str], out: TextIO) -> None:
    """One question per line in, one answer per line out. Each question is answered on its own (no
    history), so a file of questions gives the same answers in any order; commands still apply."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        command = parse_command(line)
        if command is None:
            out.write(one_line(session.answer(line)) + "\n")
        elif command[0] == "/quit":
            break
        elif command[0] == "/compare" and command[1]:
            for name in (BASE, session.model):
                out.write(f"{name}: {one_line(session.answer(command[1], name))}\n")
        else:
            _run_command(session, command, err=True)
        out.flush()


def _run_command(session: Session, command: tuple[str, str], err: bool = False) -> None:
    """/reset, /model, /help (and a /compare without a question): status goes to stderr."""
    word, arg = command
    say = console.console.print if err else console.out.print
    if word == "/reset":
        session.history.clear()
        say("(conversation cleared)", markup=False)
    elif word == "/model":
        try:
            session.switch(arg)
            say(f"(now chatting with {arg})", markup=False)
        except QatuneError as exc:
            say(f"error: {exc}", markup=False)
    else:
        say(HELP, markup=False)


def _compare(session: Session, question: str) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True, expand=True)
    for name in (BASE, session.model):
        table.add_column(name, ratio=1)
    table.add_row(
        *(Text(visible(session.answer(question, name)) or "(empty answer)") for name in (BASE, session.model))
    )
    console.out.print(table)


def interactive(session: Session, stdin: TextIO, out: TextIO) -> None:
    console.out.print(
        f"[bold]qatune chat[/bold] with [cyan]{session.model}[/cyan] (models: {', '.join(session.engine.names)})",
        highlight=False,
    )
    console.out.print(HELP, markup=False, style="dim")
    while True:
        try:
            line = console.out.input("[bold green]you>[/bold green] ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        command = parse_command(line) if line else ("", "")
        if command == ("", ""):
            continue
        if command is None:
            console.out.print(f"[bold cyan]{session.model}>[/bold cyan] ", end="")
            cancel = threading.Event()
            try:
                session.reply(line, out, cancel, visible_only=True)
            except KeyboardInterrupt:
                cancel.set()
                out.write(" [stopped]")
            out.write("\n")
        elif command[0] == "/quit":
            return
        elif command[0] == "/compare" and command[1]:
            _compare(session, command[1])
        else:
            _run_command(session, command)
