"""Resumable training state under RUN/checkpoints: trainable weights, optimizer, scheduler, RNG states and
progress. Tensors go to safetensors, everything else to JSON (nothing is unpickled). Each checkpoint is
built in a temp folder and renamed whole; the previous one is deleted only after the new one is complete."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.storage import atomic_dir, atomic_write_bytes, atomic_write_json, read_json

FORMAT = 1
_NAME = re.compile(r"ckpt-(\d{6})")
STATE = "state.json"


def _save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (folders still being built start with '.' and are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.fullmatch(p.name)) and (p / STATE).exists()]
    return [p for _, p in sorted(found)]


def latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return meta, tensors


def _set_rng_state(meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optimizer state_dict -> (JSON part, tensors); per-parameter tensors are keyed 'opt.<idx>.<name>'."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def _join_optimizer(meta: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    per: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            per.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        per.setdefault(int(idx), {}).update(values)
    return {"state": per, "param_groups": meta["param_groups"]}


def save(root: Path, progress: dict[str, Any], trainable: dict[str, Any], optimizer: Any, scheduler: Any) -> Path:
    """Write a new checkpoint and then drop older ones. Raises OSError (e.g. disk full) with the
    previous checkpoint untouched."""
    root = Path(root)
    previous = list_checkpoints(root)
    seq = int(_NAME.fullmatch(previous[-1].name).group(1)) + 1 if previous else 1  # type: ignore[union-attr]
    target = root / f"ckpt-{seq:06d}"
    opt_meta, opt_tensors = _split_optimizer(optimizer.state_dict())
    rng_meta, rng_tensors = _rng_state()
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    with atomic_dir(target) as tmp:
        _save_tensors(tmp / "trainable.safetensors", trainable)
        _save_tensors(tmp / "optimizer.safetensors", {**opt_tensors, **rng_tensors})
        atomic_write_json(
            tmp / STATE,
            {"format": FORMAT, "progress": progress, "optimizer": opt_meta, "scheduler": sched, "rng": rng_meta},
        )
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_progress(path: Path) -> dict[str, Any]:
    try:
        state = read_json(Path(path) / STATE)
    except (OSError, ValueError) as exc:
        raise QatuneError(f"unreadable checkpoint ({exc}); delete it to start over", path=path) from None
    if state.get("format") != FORMAT:
        raise QatuneError("checkpoint written by another qatune version; delete it to start over", path=path)
    return state["progress"]


def restore(path: Path, params: dict[str, Any], optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Load a checkpoint into live objects (parameters by name, optimizer, scheduler, RNGs); return progress."""
    import torch

    path = Path(path)
    progress = read_progress(path)
    state = read_json(path / STATE)
    weights = _load_tensors(path / "trainable.safetensors")
    if set(weights) != set(params):
        raise QatuneError("checkpoint does not match this model's LoRA parameters; delete it to start over", path=path)
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    extra = _load_tensors(path / "optimizer.safetensors")
    optimizer.load_state_dict(_join_optimizer(state["optimizer"], extra))
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(state["scheduler"]["base_lrs"])})
    _set_rng_state(state["rng"], extra)
    return progress
