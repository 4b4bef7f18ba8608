"""The data report for people: RUN/data/report.md and the short table `qatune prepare` prints."""

from __future__ import annotations

from pathlib import Path

from qatune import console

_ROW_NOTE = "Row numbers are the ones a spreadsheet app shows (JSON and Parquet: item number; JSON Lines: line number)."


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|").replace("`", "'")


def counts(report: dict, blank_rows: int) -> list[tuple[str, int]]:
    splits = report["splits"]
    return [
        ("valid pairs", report["valid_pairs"]),
        ("train", splits["train"]),
        ("train, reworded questions added", splits["train_augmented"]),
        ("validation: paraphrases of trained facts", splits.get("val_paraphrase", 0)),
        ("validation: generated rewordings of trained questions", splits.get("val_generated", 0)),
        ("validation: unseen facts (shown only)", splits.get("val_unseen", splits["val"])),
        (_test_label(report), splits["test"]),
        ("unseen: facts never trained (eval set 'unseen')", splits.get("unseen", 0)),
        (_unanswerable_label(report), splits.get("unanswerable", 0)),
        ("refusal questions: trained and calibrating abstention", splits.get("refusals", 0)),
        ("dropped rows", len(report["dropped"])),
        ("blank rows skipped", blank_rows),
        ("warnings", len(report["warnings"])),
    ]


def _test_label(report: dict) -> str:
    if report.get("test_kind") == "generated":
        return "test: generated rewordings of trained questions"
    return "test"


def _unanswerable_label(report: dict) -> str:
    how = {"generated": ", generated", "example": ", the example's own"}.get(report.get("unanswerable_kind") or "", "")
    return f"unanswerable: questions the data does not answer (eval set 'unanswerable'{how})"


def markdown(report: dict, blank_rows: int, test_file: str | None = None) -> str:
    src = report["source"]
    where = []
    if src["sheet"]:
        where.append(f"sheet '{_cell(src['sheet'])}'")
    if src["header_row"] is not None:
        where.append(f"header in row {src['header_row']}")
    where.append(f"question column '{_cell(src['question_col'])}', answer column '{_cell(src['answer_col'])}'")
    lines = ["# Data report", "", f"Source: `{_cell(src['path'])}` ({', '.join(where)})", f"SHA-256: `{src['sha256']}`"]
    if test_file:
        lines.append(f"Test set: `{_cell(test_file)}` (given explicitly)")
    lines += ["", "| | rows |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in counts(report, blank_rows)]
    lines += [
        "",
        "The train split holds the original pairs; reworded training questions are added to train.jsonl "
        "after the split, and no held-out question (validation, test, unseen) is ever trained on. Validation "
        "asks about trained facts in other words, so it measures recall of facts, not wording.",
    ]
    if report["dropped"]:
        lines += ["", "## Dropped rows", "", "| row | reason |", "|---:|---|"]
        lines += [f"| {d['row']} | {_cell(d['reason'])} |" for d in report["dropped"]]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in report["warnings"]]
    lines += ["", _ROW_NOTE, ""]
    return "\n".join(lines)


def print_summary(report: dict, blank_rows: int, data_dir: str) -> None:
    if console.is_quiet():
        return
    console.table(f"Prepared {Path(report['source']['path']).name}", ["", "rows"], counts(report, blank_rows))
    for drop in report["dropped"][:5]:
        console.info(f"dropped row {drop['row']}: {drop['reason']}")
    if len(report["dropped"]) > 5:
        console.info(f"... and {len(report['dropped']) - 5} more dropped rows (see report.md)")
    for warning in report["warnings"][:5]:
        console.warn(warning)
    if len(report["warnings"]) > 5:
        console.info(f"... and {len(report['warnings']) - 5} more warnings (see report.md)")
    console.info(f"wrote {data_dir}")
