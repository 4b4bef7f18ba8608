"""Training examples: tokenize the run's splits once (cached as JSON), order them per (seed, epoch), and
collate micro-batches by length-grouped dynamic padding or padding-free packing. Padding never carries a label."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, warn
from qatune.prompts import IGNORE_INDEX, encode_pair
from qatune.storage import atomic_write_json, file_sha256, read_json, read_jsonl

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

GROUP_BATCHES = 8  # length grouping sorts within windows of this many batches, keeping the order random
PAD_FACTOR = 3  # a grouped batch holds at most batch_size x PAD_FACTOR x the median length in padded tokens
REQUIRED_KEYS = ("id", "question", "answer")


@dataclass(frozen=True)
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def read_split(path: Path) -> list[dict]:
    try:
        rows = read_jsonl(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QatuneError(f"not valid JSONL ({exc}); rerun `qatune prepare`", path=path) from None
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str | int) for k in REQUIRED_KEYS):
            raise QatuneError(f"each line needs {', '.join(REQUIRED_KEYS)}; rerun `qatune prepare`", path=path, row=i)
        if not str(row["question"]).strip() or not str(row["answer"]).strip():
            raise QatuneError("empty question or answer; rerun `qatune prepare`", path=path, row=i)
    return rows


def headed(row: dict) -> bool:
    """Whether a training row teaches only its answer's head: a reworded question or a grounded example (the
    pair's own question teaches the whole answer)."""
    return bool(row.get("augmented_from") or row.get("grounded"))


def load_examples(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    cache_dir: Path | None,
    model_key: str,
    head: int = 0,
    lead: Callable[[str], str] | None = None,
) -> list[Example]:
    """Encode a split through the chat template; the result is cached by data, tokenizer and length. With `lead`,
    the rows that are not grounded train their answer's lead (train/leads.py) with its end-of-turn. With `head`,
    the other rows `headed` says keep their answer's first `head` tokens (labelled; no end-of-turn when cut)."""
    path = Path(path)
    if not path.is_file():
        raise QatuneError("split file not found; run `qatune prepare` first", path=path)
    key_src = json.dumps(
        [file_sha256(path), model_key, tokenizer.chat_template, len(tokenizer), max_length, head, bool(lead)]
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{path.stem}-{key}.json" if cache_dir else None
    if cache is not None and cache.exists():
        try:
            return [Example(**e) for e in read_json(cache)]
        except (ValueError, TypeError, KeyError):
            pass  # unreadable cache: rebuild it
    examples, skipped, cut = [], 0, 0
    for row in read_split(path):
        led = lead is not None and not row.get("grounded")
        answer = lead(str(row["answer"])) if led else str(row["answer"])
        enc = encode_pair(tokenizer, str(row["question"]), answer, max_length)
        if enc is None or enc.answer_tokens == 0:
            skipped += 1
            continue
        ids, labels = enc.input_ids, enc.labels
        if head and headed(row) and not led:
            keep = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX) + head
            ids, labels = ids[:keep], labels[:keep]
        else:
            cut += enc.cut
        examples.append(Example(str(row["id"]), ids, labels))
    if skipped:
        warn(f"{path.name}: {skipped} pair(s) skipped: the prompt alone exceeds max_length={max_length}")
    if cut:
        warn(
            f"{path.name}: {cut} answer(s) cut at max_length={max_length} tokens, so the model does not learn "
            "where they end; raise --max-length"
        )
    if cache is not None:
        atomic_write_json(cache, [e.__dict__ for e in examples])
    return examples


def shared_prefix_len(examples: list[Example]) -> int:
    """Tokens every example starts with (system prompt, role header), ending before the first label.

    They are computed once per batch instead of once per example; causal attention makes this exact."""
    if not examples:
        return 0
    first = examples[0].input_ids
    n = min(len(e.input_ids) for e in examples)
    for e in examples[1:]:
        ids = e.input_ids
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    first_label = min(next(i for i, t in enumerate(e.labels) if t != IGNORE_INDEX) for e in examples)
    return max(0, min(n, first_label - 1))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation that depends only on (seed, epoch), so a resumed run replays the same order."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def plan_batches(lengths: list[int], seed: int, epoch: int, batch_size: int, grouped: bool = True) -> list[list[int]]:
    """Micro-batches of example indices for one epoch: shuffled, then sorted by length inside windows of
    GROUP_BATCHES batches so each batch holds similar lengths (little padding), then batches shuffled. A batch
    of rows far longer than most (long answers) holds fewer of them, so its padded size stays near the others'."""
    import statistics

    import torch

    order = epoch_order(len(lengths), seed, epoch)
    if not grouped:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_BATCHES
    cap = PAD_FACTOR * batch_size * statistics.median(lengths) if lengths else 0
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        batch: list[int] = []
        for i in sorted(order[start : start + window], key=lambda i: -lengths[i]):
            if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[batch[0]] > cap):
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919)
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _targets(labels: list[int]) -> list[int]:
    """Next-token targets: position t predicts token t+1; the last position predicts nothing."""
    return labels[1:] + [IGNORE_INDEX]


def collate(examples: list[Example], pad_id: int, prefix_len: int = 0, packed: bool = False) -> dict[str, Any]:
    """Tensors for one micro-batch. `targets` are already shifted; only answer tokens carry one.

    padded: rows right-padded to the longest (pad positions masked out and never a target);
    packed: one row, position ids restart per example and no attention mask, so the model builds a
    block-diagonal causal mask (no attention across examples); prefix sharing is off when packed."""
    import torch

    if packed:
        ids, pos, tgt = [], [], []
        for e in examples:
            ids += e.input_ids
            pos += list(range(len(e.input_ids)))
            tgt += _targets(e.labels)
        return {
            "input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([pos]),
            "attention_mask": None,
            "targets": torch.tensor([tgt]),
            "prefix_ids": None,
        }
    width = max(len(e.input_ids) for e in examples) - prefix_len
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    tgt = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), prefix_len + width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids) - prefix_len
        ids[row, :n] = torch.tensor(e.input_ids[prefix_len:])
        tgt[row, :n] = torch.tensor(_targets(e.labels)[prefix_len:])
        mask[row, : prefix_len + n] = 1
    pos = torch.arange(prefix_len, prefix_len + width).unsqueeze(0).expand(len(examples), -1)
    prefix = torch.tensor([examples[0].input_ids[:prefix_len]]) if prefix_len else None
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "targets": tgt, "prefix_ids": prefix}


def batch_tokens(examples: list[Example]) -> tuple[int, int]:
    """(tokens, answer tokens) the batch trains on, padding excluded."""
    return sum(len(e.input_ids) for e in examples), sum(e.answer_tokens for e in examples)


def auto_batch_size(lengths: list[int], token_budget: int, n_min_steps: int = 8) -> int:
    """Examples per micro-batch: fill `token_budget` tokens at the mean length, but keep at least
    `n_min_steps` optimizer steps per epoch so small data sets still get enough updates."""
    if not lengths:
        return 1
    mean = sum(lengths) / len(lengths)
    by_budget = max(1, int(token_budget // max(mean, 1)))
    by_steps = max(1, len(lengths) // n_min_steps)
    return max(1, min(by_budget, by_steps))


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {k: (v.to(device) if v is not None else None) for k, v in batch.items()}
