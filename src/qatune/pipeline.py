"""`qatune run`: prepare -> train -> eval -> report as straight-line calls. Each stage is skipped when
the run directory already holds its outputs for unchanged inputs; the run's clock (qatune.eta) asks the stages
for their work left at each boundary and is handed to train and eval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qatune import config as cfg
from qatune import eta
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
    unanswerable: Path | None = None,
) -> dict[str, float]:
    """Run every stage; returns seconds spent per stage (0 for a reused stage)."""
    from qatune import train
    from qatune.data import prepare
    from qatune.evaluate import answer
    from qatune.models.resolve import preflight
    from qatune.report import html

    if data is None and test_file is None:
        test_file = prepare.example_test_path()
    rundir = RunDir(out or default_run_dir(data))
    config = cfg.load(config_path, overrides, base=cfg.load_run_config(rundir.config_yaml))
    model_path = preflight(config)  # a model that is missing or cannot fit is refused before any stage runs
    info(f"run directory: {rundir.root}")
    seconds: dict[str, float] = {}

    clock = eta.RunClock(rundir, config, model_path, lambda: _work_left(rundir, config, question_files))
    with _timed(seconds, "prepare", clock) as fresh:
        if prepare.is_current(rundir.root, data, config, test_file, unanswerable):
            fresh.skip()
        else:
            prepare.prepare(data, rundir.root, config, test_file=test_file, unanswerable=unanswerable)
    with _timed(seconds, "train", clock) as fresh:
        if train.is_current(rundir.root, config):
            fresh.skip()
        else:
            train.train(rundir.root, config, resume=train.can_resume(rundir.root, config), clock=clock)
    for questions, name in _eval_sets(rundir, question_files):
        with _timed(seconds, f"eval:{name}", clock) as fresh:
            if answer.is_current(rundir.root, config, name, questions):
                fresh.skip()
            else:
                answer.evaluate(rundir.root, config, questions=questions, name=name, clock=clock)
    with _timed(seconds, "report", clock):
        report_path = html.build(rundir.root)

    _print_summary(rundir, report_path, seconds)
    return seconds


def _eval_sets(rundir: RunDir, question_files: list[Path] | None) -> list[tuple[Path | None, str]]:
    sets: list[tuple[Path | None, str]] = [(None, "test")]
    if _has_rows(rundir.split_file("unanswerable")):
        sets.append((None, "unanswerable"))  # questions the data does not answer: the right response is to abstain
    if _has_rows(rundir.split_file("unseen")):
        sets.append((None, "unseen"))  # facts held out of training (opt-in): what the shipped model was never shown
    return sets + [(Path(q), Path(q).stem) for q in question_files or []]


def _has_rows(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _work_left(rundir: RunDir, config: cfg.Config, question_files: list[Path] | None) -> dict[str, eta.Work | None]:
    """The work each later stage reports it still has, for the run's clock (None: its outputs are current, so it is
    reused). Asked at every stage boundary: before training, the eval sets count the adapters it will save."""
    from qatune import train
    from qatune.evaluate.work import work_left as eval_work_left

    work: dict[str, eta.Work | None] = {"train": train.work_left(rundir.root, config)}
    adapters = None if work["train"] is None else train.adapter_names(config.train.epochs)
    for questions, name in _eval_sets(rundir, question_files):
        work[f"eval:{name}"] = eval_work_left(rundir.root, config, name, questions, adapters)
    work["report"] = eta.REPORT
    return work


class _Stage:
    def __init__(self) -> None:
        self.skipped = False

    def skip(self) -> None:
        self.skipped = True


class _timed:
    """Time a stage, say whether it ran or was reused, and tell the run's clock."""

    def __init__(self, seconds: dict[str, float], name: str, clock: eta.RunClock):
        self.seconds, self.name, self.stage, self.clock = seconds, name, _Stage(), clock

    def __enter__(self) -> _Stage:
        self.start = time.perf_counter()
        self.clock.begin(self.name)
        return self.stage

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.seconds[self.name] = 0.0 if self.stage.skipped else elapsed
        if self.stage.skipped:
            info(f"[dim]{self.name}: up to date, reused[/dim]")
        elif exc[0] is None:
            info(f"{self.name}: done in {elapsed:.1f}s")
        if exc[0] is None:
            self.clock.end(self.name, ran=not self.stage.skipped, seconds=elapsed)


def _print_summary(rundir: RunDir, report_path: Path, seconds: dict[str, float]) -> None:
    from qatune.report.tables import results_markdown

    out.print(results_markdown(rundir.root), markup=False, soft_wrap=True)
    total = sum(seconds.values())
    shares = ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
    out.print(f"stages: {shares} (total {total:.0f}s)", markup=False, soft_wrap=True)
    unseen = rundir.split_file("unseen")
    if _has_rows(unseen):
        count = sum(1 for line in unseen.read_text(encoding="utf-8").splitlines() if line.strip())
        out.print(
            f"note: the saved models were never shown {count} pair(s) held out to measure unseen facts ({unseen}); "
            "run again with --test-frac 0 to ship models trained on every pair",
            markup=False,
            soft_wrap=True,
        )
    out.print(f"report: {report_path}", markup=False, soft_wrap=True)
