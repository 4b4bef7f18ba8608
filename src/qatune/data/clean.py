"""Raw rows -> clean question/answer pairs: whitespace normalized, blank rows skipped, unusable rows and
exact duplicates dropped with their row numbers, conflicting answers and over-long pairs warned about.
Extra columns ride along on each pair; an `answerable` column becomes a bool that lets its "no" rows go
without an answer."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qatune.data.header import norm_name
from qatune.data.table import RawRow

_SURROGATES = re.compile(r"[\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_NON_WORD = re.compile(r"[\W_]+")
TEMPLATE_OVERHEAD_TOKENS = 32
_MAX_LISTED = 10
ANSWERABLE = "answerable"
_YES = {"yes", "true", "1", "y", ""}
_NO = {"no", "false", "0", "n"}


def clean_text(text: str, multiline: bool = False) -> str:
    """Trim and collapse spaces (non-breaking ones included); answers keep their line breaks."""
    text = unicodedata.normalize("NFC", _SURROGATES.sub("\ufffd", text))
    text = _SPACES.sub(" ", _INVISIBLE.sub("", _LINE_BREAKS.sub("\n", text)))
    if not multiline:
        return " ".join(text.split())
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def question_key(question: str) -> str:
    """The form under which two questions count as the same (case, punctuation and spacing ignored)."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", question).casefold()).split())


@dataclass
class Cleaned:
    pairs: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blank_rows: int = 0


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_MAX_LISTED])
    return shown + (f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else "")


def parse_answerable(text: str | None) -> bool | None:
    """An `answerable` cell: yes/true/1/y or empty -> True, no/false/0/n -> False (any case), else None."""
    value = (text or "").strip().casefold()
    return True if value in _YES else False if value in _NO else None


def _extra_fields(raw: RawRow) -> tuple[dict[str, Any], bool, str | None]:
    """The row's extra cells as pair fields (`answerable` parsed to a bool), whether the row is answerable,
    and why the row cannot be used (an `answerable` value that is neither yes nor no)."""
    fields: dict[str, Any] = {}
    for name, text in raw.extra.items():
        if norm_name(name) != ANSWERABLE:
            fields[name] = clean_text(text) if text else None
            continue
        fields[name] = parse_answerable(text)
        if fields[name] is None:
            return fields, True, f"{ANSWERABLE} {clean_text(text or '')!r}: use yes or no (or true/false, 1/0, y/n)"
    return fields, all(v is not False for v in fields.values()), None


def clean_rows(
    rows: Iterable[RawRow],
    *,
    id_prefix: str = "row",
    blank_rows: int = 0,
    label: str = "",
    answer_required: bool = True,
) -> Cleaned:
    """Pairs with ids `{id_prefix}-{row}`; `label` prefixes drop reasons (e.g. rows of a test file).
    An empty answer drops the row, unless answers are not required or the row's `answerable` is false;
    such a pair has the answer "". The rows' extra cells become fields of the pairs, under the names asked."""
    out = Cleaned(blank_rows=blank_rows)
    first_row: dict[tuple[str, str], int] = {}
    for raw in rows:
        if raw.problem:
            out.dropped.append({"row": raw.row, "reason": f"{label}{raw.problem}"})
            continue
        question = clean_text(raw.question or "")
        answer = clean_text(raw.answer or "", multiline=True)
        if not question and not answer:
            out.blank_rows += 1
            continue
        fields, answerable, reason = _extra_fields(raw)
        if not question:
            reason = "empty question"
        elif reason is None and not answer and answer_required and answerable:
            reason = "empty answer"
        elif reason is None and (question, answer) in first_row:
            reason = f"duplicate of row {first_row[(question, answer)]}"
        if reason:
            out.dropped.append({"row": raw.row, "reason": f"{label}{reason}"})
            continue
        first_row[(question, answer)] = raw.row
        pair = {"id": f"{id_prefix}-{raw.row}", "question": question, "answer": answer, "source_row": raw.row}
        out.pairs.append(pair | {k: v for k, v in fields.items() if k not in pair})
    out.warnings.extend(conflict_warnings(out.pairs, label))
    return out


def conflict_warnings(pairs: list[dict], label: str = "") -> list[str]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for pair in pairs:
        groups[question_key(pair["question"])].append(pair)
    conflicts = [g for g in groups.values() if len({p["answer"] for p in g}) > 1]
    warnings = []
    for group in conflicts[:_MAX_LISTED]:
        rows = _rows_text([p["source_row"] for p in group])
        question = group[0]["question"]
        shown = question if len(question) <= 60 else question[:57] + "..."
        warnings.append(f"{label}rows {rows} ask the same question with different answers (all kept): {shown!r}")
    if len(conflicts) > _MAX_LISTED:
        warnings.append(
            f"{label}{len(conflicts) - _MAX_LISTED} more questions have different answers in different rows (all kept)"
        )
    return warnings


def _model_folder(model: str) -> Path | None:
    """The model's local folder when it exists already (no download, no conversion)."""
    from qatune.models.embedded import cached_folder, embedded

    folder = cached_folder(model) if embedded(model) else Path(model).expanduser()
    return folder if (folder / "config.json").is_file() else None


def token_counter(model: str) -> tuple[Callable[[str], int], str, int | None]:
    """(count, how it counts, model context length): the model's own tokenizer when it is on disk,
    else an estimate of 4 characters per token."""
    folder = _model_folder(model)
    context = None
    if folder is not None:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            context = next(
                (
                    int(cfg[k])
                    for k in ("max_position_embeddings", "n_positions", "max_seq_len")
                    if isinstance(cfg.get(k), int)
                ),
                None,
            )
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return (
                (lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)),
                "by the model's tokenizer",
                context,
            )
        except Exception:  # a tokenizer we cannot load cheaply: fall back to the estimate
            pass
    return (lambda s: (len(s) + 3) // 4), "estimated at 4 characters per token", context


def length_warnings(pairs: list[dict], model: str, max_length: int | str) -> list[str]:
    """One warning listing the rows whose pair would not fit the training length (`auto`: fitted to the pairs)
    or the model context."""
    count, how, context = token_counter(model)
    limits = [n for n in (max_length if isinstance(max_length, int) else None, context) if n]
    if not limits:
        return []
    limit = min(limits)
    long_rows = []
    for pair in pairs:
        size = len(pair["question"].encode()) + len(pair["answer"].encode()) + TEMPLATE_OVERHEAD_TOKENS
        if size <= limit:  # a byte-level tokenizer never gives more tokens than bytes
            continue
        if count(pair["question"]) + count(pair["answer"]) + TEMPLATE_OVERHEAD_TOKENS > limit:
            long_rows.append(pair["source_row"])
    if not long_rows:
        return []
    return [
        f"{len(long_rows)} pair(s) are longer than {limit} tokens ({how}) and will be cut short in "
        f"training; shorten them or raise train.max_length: rows {_rows_text(long_rows)}"
    ]
