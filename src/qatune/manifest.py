"""RUN/manifest.json: what produced the run's outputs: qatune and key library versions, data and config
hashes, the qatune source's git commit when it lives in a git work tree, device and precision."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from qatune import __version__
from qatune.config import Config, section_hash, to_yaml
from qatune.rundir import RunDir
from qatune.storage import atomic_write_json, read_json

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "tokenizers",
    "bitsandbytes",
    "liger-kernel",
    "sentence-transformers",
    "numpy",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(where: Path | None = None) -> dict[str, Any] | None:
    """Commit (and whether the tree has local changes) of the git work tree holding qatune's source."""
    folder = Path(where or Path(__file__).resolve().parent)
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        if git("rev-parse", "--is-inside-work-tree") != "true":
            return None
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "."))}
    except (OSError, subprocess.SubprocessError):
        return None


def data_hashes(rundir: RunDir) -> dict[str, str]:
    if not rundir.data_dir.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(rundir.data_dir.iterdir())
        if p.suffix == ".jsonl"
    }


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(run: Path, config: Config, stage: str, **fields: Any) -> dict[str, Any]:
    """Create or update RUN/manifest.json; `fields` (device, precision, status...) go under stages[stage]
    and the newest device/precision/quantization are also kept at the top level."""
    rundir = RunDir(run)
    path = rundir.manifest_json
    try:
        manifest = read_json(path) if path.exists() else {}
    except ValueError:
        manifest = {}
    manifest.update(
        {
            "qatune_version": __version__,
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "packages": package_versions(),
            "git": git_commit(),
            "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "model": config.model,
            "config_sha256": hashlib.sha256(to_yaml(config).encode()).hexdigest(),
            "config_hashes": {name: section_hash(getattr(config, name)) for name in ("prepare", "train", "eval")},
            "data_sha256": data_hashes(rundir),
            "updated_at": now(),
        }
    )
    for key in ("device", "precision", "quantization"):
        if key in fields:
            manifest[key] = fields[key]
    stages = manifest.setdefault("stages", {})
    stages[stage] = {**stages.get(stage, {}), **fields}
    atomic_write_json(path, manifest)
    return manifest
