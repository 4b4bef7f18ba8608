"""Leakage-free splits: pairs sharing a normalized question always land in the same split; the split is
deterministic by seed. An explicit test file replaces the random test split."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from qatune.data.clean import question_key


@dataclass
class Splits:
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _target(n: int, frac: float, groups: int) -> int:
    if frac <= 0:
        return 0
    return max(1, int(n * frac + 0.5)) if groups >= 3 else 0


def _groups(pairs: list[dict]) -> dict[str, list[dict]]:
    """Fact groups: pairs sharing a normalized question or a normalized answer (transitively) stay
    together, so a held-out split never asks about a fact that another wording trains."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for pair in pairs:
        a, b = find("q:" + question_key(pair["question"])), find("a:" + question_key(pair["answer"]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[str, list[dict]] = defaultdict(list)
    for pair in pairs:
        groups[find("q:" + question_key(pair["question"]))].append(pair)
    return groups


def paraphrase_holdout(train: list[dict], limit: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Natural paraphrase groups (one answer asked with several questions): one wording of each stays in
    training and one other is held out to validate recall of a trained fact. Returns (train, held out)."""
    by_answer: dict[str, list[dict]] = defaultdict(list)
    for pair in train:
        by_answer[question_key(pair["answer"])].append(pair)
    groups = [g for g in by_answer.values() if len({question_key(p["question"]) for p in g}) > 1]
    random.Random(f"{seed}:paraphrase").shuffle(groups)
    held: list[dict] = []
    for group in groups[:limit]:
        kept = question_key(group[0]["question"])
        other = next(p for p in group if question_key(p["question"]) != kept)
        held.append({**other, "kind": "paraphrase"})
    ids = {id(p) for p in held}
    held_ids = {p["id"] for p in held}
    return [p for p in train if p["id"] not in held_ids and id(p) not in ids], held


def _assign(pairs: list[dict], targets: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """Deal whole question groups, in seeded order, to the held-out splits until each reaches its target."""
    groups = _groups(pairs)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    out: dict[str, list[dict]] = {"train": [], **{name: [] for name in targets}}
    counts = dict.fromkeys(targets, 0)
    for key in keys:
        group = groups[key]
        home = "train"
        for name, target in targets.items():
            room = counts[name] + len(group) <= target
            if counts[name] < target and (room or counts[name] == 0):
                home = name
                counts[name] += len(group)
                break
        out[home].extend(group)
    if not out["train"]:
        for name in targets:  # keep at least one group for training
            if out[name]:
                moved = _groups(out[name])
                last = next(iter(moved))
                out["train"] = moved.pop(last)
                out[name] = [p for g in moved.values() for p in g]
                break
    order = {id(p): i for i, p in enumerate(pairs)}
    return {name: sorted(rows, key=lambda p: order[id(p)]) for name, rows in out.items()}


def split_pairs(pairs: list[dict], val_frac: float, test_frac: float, seed: int) -> Splits:
    n, groups = len(pairs), len(_groups(pairs))
    targets = {"test": _target(n, test_frac, groups), "val": _target(n, val_frac, groups)}
    parts = _assign(pairs, targets, seed)
    splits = Splits(train=parts["train"], val=parts["val"], test=parts["test"])
    _empty_warnings(splits, {"val": val_frac, "test": test_frac})
    return splits


def split_with_test(pairs: list[dict], test_pairs: list[dict], val_frac: float, seed: int) -> Splits:
    """The test set is given: training pairs asking a test question are dropped (they would leak)."""
    test_rows = {}
    for pair in test_pairs:
        test_rows.setdefault(question_key(pair["question"]), pair["source_row"])
    kept, dropped = [], []
    for pair in pairs:
        row = test_rows.get(question_key(pair["question"]))
        if row is None:
            kept.append(pair)
        else:
            dropped.append(
                {"row": pair["source_row"], "reason": f"same question as test file row {row} (kept out of training)"}
            )
    groups = len(_groups(kept))
    parts = _assign(kept, {"val": _target(len(kept), val_frac, groups)}, seed)
    splits = Splits(train=parts["train"], val=parts["val"], test=list(test_pairs), dropped=dropped)
    _empty_warnings(splits, {"val": val_frac})
    return splits


def _empty_warnings(splits: Splits, fracs: dict[str, float]) -> None:
    for name, frac in fracs.items():
        if frac > 0 and not getattr(splits, name):
            splits.warnings.append(f"the {name} split is empty: too few distinct questions to hold any out")
