"""Terminal output: rich console, quiet mode, progress bars (with `qatune run`'s time-left line under them) and
the one-line error every bad input gets."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress

EXIT_BAD_INPUT = 2

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class QatuneError(Exception):
    """A problem the user can fix (bad file, bad flag, missing run). Shown as one line, exit code 2."""

    def __init__(self, message: str, *, path: object | None = None, row: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(f"{where}{message}")
        self.path = path
        self.row = row


class _State:
    quiet = False


def set_quiet(quiet: bool) -> None:
    _State.quiet = quiet


def is_quiet() -> bool:
    return _State.quiet


def info(message: str) -> None:
    if not _State.quiet:
        console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def quiet_libraries() -> None:
    """Library progress bars and advice would drown qatune's own output (set before the libraries load)."""
    import os
    import warnings

    # peft calls a transformers API deprecated for v6; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
    for key, value in (
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TF_CPP_MIN_LOG_LEVEL", "3"),
    ):
        os.environ.setdefault(key, value)


def error_line(message: str) -> None:
    """Print the single error line; newlines inside the message are flattened so it stays one line."""
    flat = " ".join(str(message).split())
    sys.stderr.write(f"error: {flat}\n")
    sys.stderr.flush()


def progress_bar(
    *columns: Any, transient: bool, footer: Callable[[], str | None] | None = None, **options: Any
) -> Progress:
    """A progress bar on stderr with, while it runs, the line `footer` gives under it (`qatune run`'s time left);
    its last frame, the one a log keeps, has none."""
    from rich.progress import Progress
    from rich.text import Text

    class FooterBar(Progress):
        def get_renderables(self) -> Iterator[Any]:
            yield from super().get_renderables()
            live = getattr(self, "live", None)  # rich renders once before `live` is set
            line = footer() if footer is not None and live is not None and live.is_started else None
            if line:
                yield Text(line, style="dim", no_wrap=True, overflow="ellipsis")

    return FooterBar(*columns, console=options.pop("console", console), transient=transient, **options)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a table to stdout (results people and scripts read)."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)
