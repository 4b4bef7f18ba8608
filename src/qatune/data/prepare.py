"""The prepare stage: read -> clean -> split -> hold out rewordings -> augment (train only) ->
RUN/data/{train,val,test,unseen}.jsonl, report.json, report.md and stamp.json, all written at once.

Validation asks about trained facts in other words (natural paraphrases in the data, generated rewordings);
without --test the test set is generated rewordings of trained questions, and the pairs whose facts are
held out of training become the separate `unseen` eval set. Also the question-file reader eval uses."""

from __future__ import annotations

import random
from collections import Counter
from importlib.resources import files
from pathlib import Path

from qatune.config import Config, save_config, section_hash
from qatune.console import QatuneError
from qatune.data.augment import rewordings
from qatune.data.clean import ANSWERABLE, Cleaned, clean_rows, length_warnings, question_key
from qatune.data.read import read_table
from qatune.data.split import Splits, paraphrase_holdout, split_pairs, split_with_test
from qatune.data.summary import markdown, print_summary
from qatune.data.table import Table
from qatune.data.unanswerable import unanswerable_sets
from qatune.rundir import RunDir
from qatune.storage import atomic_dir, atomic_write_json, atomic_write_text, file_sha256, read_json, write_jsonl

DATA_FORMAT = 3
SPLITS = ("train", "val", "test", "unseen", "unanswerable", "refusals")


def example_data_path() -> Path:
    """The example spreadsheet shipped with qatune (a fictional course syllabus)."""
    return Path(str(files("qatune") / "examples" / "example_qa.xlsx"))


def example_test_path() -> Path:
    """Held-out reworded questions about the example syllabus: the example run's test set."""
    return Path(str(files("qatune") / "examples" / "example_test.csv"))


def example_unanswerable_path() -> Path:
    """Questions the example syllabus does not answer (and a few off-topic ones): the example run's `unanswerable`
    eval set."""
    return Path(str(files("qatune") / "examples" / "example_unanswerable.csv"))


def _ingest(
    path: Path,
    config: Config,
    *,
    strict: bool = True,
    sheet: str | None = None,
    id_prefix: str = "row",
    label: str = "",
    answer_required: bool = True,
    extra_columns: tuple[str, ...] = (),
) -> tuple[Table, Cleaned]:
    p = config.prepare
    table = read_table(
        path,
        question_col=p.question_col,
        answer_col=p.answer_col,
        sheet=sheet,
        max_rows=p.max_rows,
        strict=strict,
        answer_required=answer_required,
        extra_columns=extra_columns,
    )
    cleaned = clean_rows(
        table.rows, id_prefix=id_prefix, blank_rows=table.blank_rows, label=label, answer_required=answer_required
    )
    cleaned.warnings[:0] = table.notes
    if not cleaned.pairs:
        raise QatuneError(_no_pairs(table, cleaned, answer_required), path=path)
    return table, cleaned


def _no_pairs(table: Table, cleaned: Cleaned, answer_required: bool = True) -> str:
    if not cleaned.dropped:
        under = f" under the header in row {table.header_row}" if table.header_row else ""
        if not answer_required:
            return f"no questions{under}; add rows with a question"
        return f"no question/answer rows{under}; add rows with a question and its answer"
    reasons = Counter(d["reason"].split(" (")[0] for d in cleaned.dropped)
    top = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(3))
    first = cleaned.dropped[0]["row"]
    what = "question/answer pairs" if answer_required else "questions"
    fill = "fill in both the question and the answer" if answer_required else "fill in the questions"
    return f"no valid {what}: {len(cleaned.dropped)} row(s) dropped ({top}; first: row {first}); {fill}"


def load_questions(
    path: Path, config: Config, *, answer_required: bool = True, extra_columns: tuple[str, ...] = ()
) -> list[dict]:
    """Any supported file -> [{id, question, answer, source_row}] by the same rules (for evaluation).
    Without `answer_required` a file of questions with no answer column reads too (answers ""); the
    `extra_columns` the file has become fields of each pair (`answerable` a bool, the others text or None)."""
    _, cleaned = _ingest(
        Path(path),
        config,
        strict=False,
        id_prefix="q",
        answer_required=answer_required,
        extra_columns=extra_columns,
    )
    return cleaned.pairs


def input_hash(
    data: Path | None, config: Config, test_file: Path | None = None, unanswerable: Path | None = None
) -> str:
    """Hash of everything the prepared data depends on: source, test-file and unanswerable-file bytes, settings."""
    source = Path(data) if data is not None else example_data_path()
    test = file_sha256(Path(test_file)) if test_file is not None else ""
    unknown = file_sha256(Path(unanswerable)) if unanswerable is not None else ""
    return section_hash(config.prepare, file_sha256(source), test, unknown, DATA_FORMAT)


def is_current(
    run: Path | RunDir,
    data: Path | None,
    config: Config,
    test_file: Path | None = None,
    unanswerable: Path | None = None,
) -> bool:
    """True when RUN/data was prepared from these exact inputs and its files are intact."""
    rundir = run if isinstance(run, RunDir) else RunDir(run)
    try:
        stamp = read_json(rundir.data_stamp_json)
        if stamp.get("input_hash") != input_hash(data, config, test_file, unanswerable):
            return False
        outputs = stamp.get("outputs", {})
        return (
            all(outputs.get(name) == file_sha256(rundir.split_file(name)) for name in SPLITS)
            and rundir.data_report_json.is_file()
        )
    except (OSError, ValueError, AttributeError, QatuneError):
        return False


def _split(cleaned: Cleaned, config: Config, test_file: Path | None) -> tuple[Splits, Cleaned | None]:
    p = config.prepare
    if test_file is None:
        return split_pairs(cleaned.pairs, p.val_frac, p.test_frac, p.seed), None
    _, test_clean = _ingest(
        Path(test_file), config, strict=False, id_prefix="test", label="test file: ", extra_columns=(ANSWERABLE,)
    )
    splits = split_with_test(cleaned.pairs, test_clean.pairs, p.val_frac, p.seed)
    if not splits.train:
        raise QatuneError(
            "every question of the data is also in this test file, so nothing is left to train "
            "on; give a test file with other questions",
            path=test_file,
        )
    return splits, test_clean


def _read_unanswerable(path: Path, config: Config, train: list[dict]) -> list[dict]:
    """The user's questions that the data does not answer (any answer column ignored); a question the training
    data asks is answerable, so it is refused with its row."""
    path = Path(path)
    if not path.is_file():
        raise QatuneError("unanswerable-questions file not found; check the path", path=path)
    _, cleaned = _ingest(
        path, config, strict=False, id_prefix="unanswerable", answer_required=False, extra_columns=("kind",)
    )
    trained = {question_key(p["question"]): p.get("source_row", "?") for p in train}
    for pair in cleaned.pairs:
        if question_key(pair["question"]) in trained:
            raise QatuneError(
                f"asks a question the data answers (its row {trained[question_key(pair['question'])]}); "
                "remove it from the unanswerable questions",
                path=path,
                row=pair["source_row"],
            )
    return [{**p, "answer": "", "answerable": False, "kind": p.get("kind") or "file"} for p in cleaned.pairs]


def load_unanswerable(path: Path, config: Config, rundir: RunDir) -> list[dict]:
    """A file of questions the run's data does not answer (for `qatune eval --unanswerable FILE`)."""
    from qatune.storage import read_jsonl

    train = rundir.require(rundir.split_file("train"), "run qatune prepare first")
    return _read_unanswerable(path, config, [r for r in read_jsonl(train) if not r.get("augmented_from")])


def _check_out(run: RunDir) -> None:
    if run.root.exists() and not run.root.is_dir():
        raise QatuneError("is a file, not a run directory; choose another --out", path=run.root)


def prepare(
    data: Path | None,
    out: Path,
    config: Config,
    test_file: Path | None = None,
    unanswerable: Path | None = None,
) -> dict:
    """Stage entry: returns the report (the dict written to RUN/data/report.json)."""
    run = RunDir(out)
    _check_out(run)
    p = config.prepare
    source = Path(data) if data is not None else example_data_path()
    table, cleaned = _ingest(source, config, sheet=p.sheet)
    splits, test_clean = _split(cleaned, config, test_file)
    rows, counts = _hold_out(splits, config, generated_test=test_clean is None)
    if unanswerable is None and data is None:
        unanswerable = example_unanswerable_path()
    asked = _read_unanswerable(unanswerable, config, splits.train) if unanswerable is not None else None
    asked_kind = "example" if data is None and unanswerable == example_unanswerable_path() else "file"
    rows["unanswerable"], rows["refusals"], kind = unanswerable_sets(cleaned.pairs, rows, asked, p.seed, asked_kind)
    counts.update(unanswerable=len(rows["unanswerable"]), refusals=len(rows["refusals"]))
    dropped = sorted(cleaned.dropped + splits.dropped, key=lambda d: d["row"])
    warnings = list(cleaned.warnings)
    if test_clean is not None:
        dropped += test_clean.dropped
        warnings += test_clean.warnings
    warnings += splits.warnings
    warnings += length_warnings(splits.train + splits.val + splits.test, config.model, config.train.max_length)
    report = {
        "valid_pairs": len(cleaned.pairs),
        "splits": counts,
        "test_kind": "file" if test_clean is not None else "generated",
        "unanswerable_kind": kind,
        "dropped": dropped,
        "warnings": warnings,
        "source": {
            "path": str(source.resolve()),
            "sha256": file_sha256(source),
            "sheet": table.sheet,
            "question_col": table.question_col,
            "answer_col": table.answer_col,
            "header_row": table.header_row,
        },
    }
    blank = cleaned.blank_rows + (test_clean.blank_rows if test_clean else 0)
    _write(run, rows, report, blank, data, config, test_file, unanswerable)
    print_summary(report, blank, str(run.data_dir))
    return report


def _hold_out(splits: Splits, config: Config, generated_test: bool) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """The rows of each split file and their counts. Validation: natural paraphrases and generated rewordings
    of trained questions (recall), plus unseen-fact pairs (shown only). Without a test file the test set is
    generated rewordings too and the held-out pairs become `unseen`. Training gets `augment` rewordings.
    No question appears twice anywhere."""
    p = config.prepare
    train, paraphrases = paraphrase_holdout(splits.train, p.recall_val, p.seed)
    taken = {question_key(q["question"]) for q in train + splits.val + splits.test + paraphrases}

    def reworded(n_pairs: int, n: int, tag: str) -> list[dict]:
        return rewordings(_sample(train, n_pairs, p.seed, tag), n, p.seed, taken, method=p.augment_method, tag=tag)

    generated_val = reworded(p.recall_val - len(paraphrases), 1, "val")
    val = [{**q, "kind": "unseen"} for q in splits.val] + paraphrases
    val += [{**q, "kind": "generated"} for q in generated_val]
    test, unseen = splits.test, []
    if generated_test:
        test = [{**q, "kind": "generated"} for q in reworded(p.test_rewordings, 1, "test")]
        unseen = [{**q, "kind": "unseen"} for q in splits.test]
    augmented = reworded(len(train), p.augment, "aug")
    rows = {"train": _with_variants(train, augmented), "val": val, "test": test, "unseen": unseen}
    counts = {name: len(rows[name]) for name in ("val", "test", "unseen")}
    counts.update(
        train=len(train),
        train_augmented=len(augmented),
        val_paraphrase=len(paraphrases),
        val_generated=len(generated_val),
        val_unseen=len(splits.val),
    )
    return rows, counts


def _sample(pairs: list[dict], n: int, seed: int, tag: str) -> list[dict]:
    """Up to n pairs, a seeded choice kept in data order."""
    if n >= len(pairs):
        return list(pairs)
    chosen = set(random.Random(f"{seed}:{tag}").sample(range(len(pairs)), max(n, 0)))
    return [q for i, q in enumerate(pairs) if i in chosen]


def _with_variants(train: list[dict], augmented: list[dict]) -> list[dict]:
    """Each training pair followed by its augmented variants."""
    variants: dict[str, list[dict]] = {}
    for row in augmented:
        variants.setdefault(row["augmented_from"], []).append(row)
    return [row for pair in train for row in (pair, *variants.get(pair["id"], []))]


def _write(
    run: RunDir,
    rows: dict[str, list[dict]],
    report: dict,
    blank: int,
    data: Path | None,
    config: Config,
    test_file: Path | None,
    unanswerable: Path | None,
) -> None:
    test = str(Path(test_file).resolve()) if test_file is not None else None
    try:
        with atomic_dir(run.data_dir) as tmp:

            def inside(path: Path) -> Path:
                return tmp / path.relative_to(run.data_dir)

            for name in SPLITS:
                write_jsonl(inside(run.split_file(name)), rows[name])
            atomic_write_json(inside(run.data_report_json), report)
            atomic_write_text(inside(run.data_report_md), markdown(report, blank, test))
            atomic_write_json(
                inside(run.data_stamp_json),
                {
                    "input_hash": input_hash(data, config, test_file, unanswerable),
                    "source_sha256": report["source"]["sha256"],
                    "test_file": test,
                    "test_sha256": file_sha256(Path(test_file)) if test_file is not None else None,
                    "prepare": config.prepare.model_dump(mode="json"),
                    "outputs": {name: file_sha256(inside(run.split_file(name))) for name in SPLITS},
                },
            )
        save_config(config, run.config_yaml)
    except OSError as exc:
        raise QatuneError(
            f"cannot write the prepared data ({exc.strerror or exc}); check that the folder "
            "is writable and the disk has space",
            path=run.root,
        ) from None
