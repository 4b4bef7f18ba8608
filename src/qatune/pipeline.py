"""`qatune run`: prepare -> train -> eval -> report as straight-line calls. Each stage is skipped when
the run directory already holds its outputs for unchanged inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qatune import config as cfg
from qatune.console import info, out
from qatune.rundir import RunDir


def default_run_dir(data: Path | None) -> Path:
    return Path("runs") / (Path(data).stem if data else "example")


def run(
    data: Path | None,
    *,
    out: Path | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    test_file: Path | None = None,
    question_files: list[Path] | None = None,
) -> dict[str, float]:
    """Run every stage; returns seconds spent per stage (0 for a reused stage)."""
    from qatune import train
    from qatune.data import prepare
    from qatune.evaluate import answer
    from qatune.model import preflight
    from qatune.report import html

    if data is None and test_file is None:
        test_file = prepare.example_test_path()
    rundir = RunDir(out or default_run_dir(data))
    config = cfg.load(config_path, overrides, base=cfg.load_run_config(rundir.config_yaml))
    preflight(config)  # a model that is missing or cannot fit is refused before any stage runs
    info(f"run directory: {rundir.root}")
    seconds: dict[str, float] = {}

    with _timed(seconds, "prepare") as fresh:
        if prepare.is_current(rundir.root, data, config, test_file):
            fresh.skip()
        else:
            prepare.prepare(data, rundir.root, config, test_file=test_file)
    with _timed(seconds, "train") as fresh:
        if train.is_current(rundir.root, config):
            fresh.skip()
        else:
            train.train(rundir.root, config, resume=train.can_resume(rundir.root, config))
    sets: list[tuple[Path | None, str]] = [(None, "test")]
    if _has_rows(rundir.split_file("unseen")):
        sets.append((None, "unseen"))  # facts never trained: shows whether models invent answers
    for questions, name in sets + [(Path(q), Path(q).stem) for q in question_files or []]:
        with _timed(seconds, f"eval:{name}") as fresh:
            if answer.is_current(rundir.root, config, name, questions):
                fresh.skip()
            else:
                answer.evaluate(rundir.root, config, questions=questions, name=name)
    with _timed(seconds, "report"):
        report_path = html.build(rundir.root)

    _print_summary(rundir, report_path, seconds)
    return seconds


def _has_rows(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


class _Stage:
    def __init__(self) -> None:
        self.skipped = False

    def skip(self) -> None:
        self.skipped = True


class _timed:
    """Time a stage and say whether it ran or was reused."""

    def __init__(self, seconds: dict[str, float], name: str):
        self.seconds, self.name, self.stage = seconds, name, _Stage()

    def __enter__(self) -> _Stage:
        self.start = time.perf_counter()
        return self.stage

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.seconds[self.name] = 0.0 if self.stage.skipped else elapsed
        if self.stage.skipped:
            info(f"[dim]{self.name}: up to date, reused[/dim]")
        elif exc[0] is None:
            info(f"{self.name}: done in {elapsed:.1f}s")


def _print_summary(rundir: RunDir, report_path: Path, seconds: dict[str, float]) -> None:
    from qatune.report.tables import results_markdown

    out.print(results_markdown(rundir.root), markup=False, soft_wrap=True)
    total = sum(seconds.values())
    shares = ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
    out.print(f"stages: {shares} (total {total:.0f}s)", markup=False, soft_wrap=True)
    out.print(f"report: {report_path}", markup=False, soft_wrap=True)
