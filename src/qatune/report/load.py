"""Read what a run directory holds for the report, tolerating missing or damaged files: whatever cannot
be read is recorded as a note so the report shows it instead of failing."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.rag import closed_book, grounded_name, is_grounded
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.train.state import TrainSummary

_EPOCH = re.compile(r"epoch-(\d+)")


@dataclass
class EvalSet:
    name: str
    scores: dict[str, Any]
    generations: list[dict[str, Any]]
    combined: list[dict[str, Any]]


@dataclass
class RunData:
    rundir: RunDir
    data_report: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: TrainSummary | None = None
    summary_json: dict[str, Any] | None = None  # the file as written, for the report's raw block
    evals: list[EvalSet] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (null, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def stat(scores: dict[str, Any], model: str, metric: str) -> tuple[float, float | None, float | None] | None:
    """(mean, ci_low, ci_high) of one model's metric in scores.json, or None when absent."""
    entry = ((scores.get("models") or {}).get(model) or {}).get(metric)
    if not isinstance(entry, dict) or number(entry.get("mean")) is None:
        return None
    ci = entry.get("ci95") if isinstance(entry.get("ci95"), list | tuple) else [None, None]
    ci = list(ci) + [None, None]
    return number(entry["mean"]), number(ci[0]), number(ci[1])


def comparison(
    scores: dict[str, Any], model: str, metric: str
) -> tuple[float, float | None, float | None, float | None] | None:
    """(diff, ci_low, ci_high, p) of a model vs base, or None when absent."""
    entry = ((scores.get("comparisons") or {}).get(model) or {}).get(metric)
    if not isinstance(entry, dict) or number(entry.get("diff")) is None:
        return None
    ci = list(entry.get("ci95") or []) + [None, None]
    return number(entry["diff"]), number(ci[0]), number(ci[1]), number(entry.get("p"))


def epoch_of(model: str, summary: TrainSummary | None = None) -> int | None:
    """Epoch count of `epoch-N`; for `best`, the training summary's best epoch."""
    model = closed_book(model)
    m = _EPOCH.fullmatch(model)
    if m:
        return int(m.group(1))
    return summary.best_epoch if model == "best" and summary is not None else None


def kind_of(scores: dict[str, Any], model: str) -> str:
    kind = (scores.get("kinds") or {}).get(model)
    if kind in ("base", "baseline", "fine-tuned"):
        return kind
    return {"base": "base", "retrieval": "baseline", grounded_name("base"): "baseline"}.get(model, "fine-tuned")


def model_order(models: list[str]) -> list[str]:
    """base, retrieval, epoch-N by N, best, then the grounded ones in the same order, then the rest."""

    def key(name: str) -> tuple[int, int, str]:
        grounded = 5 if is_grounded(name) else 0
        closed = closed_book(name)
        m = _EPOCH.fullmatch(closed)
        if closed == "base":
            return (grounded, 0, name)
        if closed == "retrieval":
            return (1, 0, name)
        if m:
            return (grounded + 2, int(m.group(1)), name)
        return (grounded + (3 if closed == "best" else 4), 0, name)

    return sorted(dict.fromkeys(models), key=key)


def _read_json(path: Path, kind: type, notes: list[str], hint: str) -> Any:
    if not path.exists():
        notes.append(f"{path.name} not found ({hint})")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path} could not be read ({type(exc).__name__}: {exc}); it is left out")
        return None
    if not isinstance(value, kind):
        notes.append(f"{path} does not hold a JSON {kind.__name__}; it is left out")
        return None
    return value


def _read_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    try:
        rows = read_jsonl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path} could not be read ({type(exc).__name__}); it is left out")
        return []
    return [r for r in rows if isinstance(r, dict)]


def _read_config(path: Path, notes: list[str]) -> dict[str, Any] | None:
    import yaml

    if not path.exists():
        notes.append("config.yaml not found (the resolved config is saved by prepare and train)")
        return None
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        notes.append(f"{path} could not be read ({type(exc).__name__}); it is left out")
        return None
    return value if isinstance(value, dict) else None


def _read_eval(rundir: RunDir, folder: Path, notes: list[str]) -> EvalSet | None:
    name = folder.name
    scores = _read_json(
        folder / "scores.json", dict, notes, f"eval set '{name}' is incomplete: rerun `qatune eval --run {rundir.root}`"
    )
    if scores is None:
        return None
    gens = _read_rows(folder / "generations.jsonl", notes)
    combined = (
        _read_json(
            folder / "combined_responses.json",
            list,
            notes,
            f"eval set '{name}': side-by-side answers come from generations.jsonl",
        )
        or []
    )
    return EvalSet(name, scores, gens, [c for c in combined if isinstance(c, dict)])


def load_run(run: str | Path) -> RunData:
    """Everything the report can use; raises only when `run` is not a run directory at all."""
    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found: run `qatune prepare` or `qatune run` first", path=rundir.root)
    data = RunData(rundir)
    notes = data.missing
    data.data_report = _read_json(rundir.data_report_json, dict, notes, "run `qatune prepare`")
    data.config = _read_config(rundir.config_yaml, notes)
    if rundir.metrics_jsonl.exists():
        data.metrics = _read_rows(rundir.metrics_jsonl, notes)
    data.summary_json = _read_json(
        rundir.train_summary_json, dict, notes, f"training has not finished: run `qatune train --run {rundir.root}`"
    )
    data.summary = TrainSummary.from_json(data.summary_json) if data.summary_json is not None else None
    folders = [p for p in rundir.eval_root.iterdir() if p.is_dir()] if rundir.eval_root.is_dir() else []
    folders.sort(key=lambda p: (p.name != "test", p.name))
    for folder in folders:
        if folder.name.startswith("."):
            continue
        loaded = _read_eval(rundir, folder, notes)
        if loaded is not None:
            data.evals.append(loaded)
    if not folders:
        notes.append(f"no evaluation yet: run `qatune eval --run {rundir.root}`")
    if data.data_report is None and data.config is None and data.summary is None and not data.evals:
        raise QatuneError(
            "not a qatune run directory (no data report, config, training or evaluation "
            "files): run `qatune run` or `qatune prepare` first",
            path=rundir.root,
        )
    return data
