"""What `--model` names, as a local folder checked before loading: the embedded models, a .gguf file (converted
once), a local folder, or a hub id already in the local cache; pickle-based weights refused; and the preflight
that refuses a model which cannot train here from its config alone, before any stage starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qatune.console import QatuneError
from qatune.models.embedded import embedded, resolve_embedded
from qatune.models.gguf import cached_gguf
from qatune.models.memory import check_fits
from qatune.models.placement import choose_placement

if TYPE_CHECKING:
    from qatune.config import Config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


def resolve_model(spec: str) -> str:
    """'default' / 'gemma3-270m' / a .gguf / a folder / a hub id in the local cache -> a local folder.

    Nothing is downloaded: a hub id must already be in the Hugging Face cache, unless QATUNE_ALLOW_DOWNLOAD=1."""
    model = embedded(spec)
    if model is not None:
        return str(resolve_embedded(model))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise QatuneError("GGUF file not found; check the path", path=path)
        return str(cached_gguf(path.resolve()))
    if path.exists():
        check_model_folder(path)
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise QatuneError("model folder not found; check the path", path=path)
    return str(_hub_folder(spec))


def preflight(config: Config) -> str:
    """Resolve the run's model and refuse one that cannot train here, before any stage starts or a weight is read."""
    model_path = resolve_model(config.model)
    placement = choose_placement(config.train.quant, config.train.precision, cpu_bf16=True)
    lora_r = config.train.lora_r
    length = config.train.max_length
    check_fits(model_path, placement, training=True, tokens=length if isinstance(length, int) else 512, lora_r=lora_r)
    return model_path


def check_model_folder(path: Path) -> None:
    """A folder needs config.json, weights and a tokenizer; each missing part is one line saying so."""
    if not (path / "config.json").exists():
        raise QatuneError("not a model folder (no config.json); give a hub id, a folder or a .gguf", path=path)
    names = {p.name for p in path.iterdir()}
    if not any(n.endswith(".safetensors") or n.endswith(PICKLE_SUFFIXES) for n in names):
        raise QatuneError("the model folder holds no weights (no *.safetensors file); copy them in", path=path)
    if not names & set(TOKENIZER_FILES):
        raise QatuneError(
            "the model folder holds no tokenizer (tokenizer.json or tokenizer.model); copy the tokenizer files "
            "of the same release in",
            path=path,
        )


def _hub_folder(repo_id: str) -> Path:
    """The cached snapshot of a hub id; a download only when the user allows it (QATUNE_ALLOW_DOWNLOAD=1)."""
    from huggingface_hub import constants, snapshot_download

    allowed = os.environ.get("QATUNE_ALLOW_DOWNLOAD") == "1" and not constants.HF_HUB_OFFLINE
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=not allowed))
    except Exception as exc:  # not cached, invalid id, no network: one line for all of them
        if allowed:
            raise QatuneError(f"cannot download {repo_id!r}: {str(exc).splitlines()[0]}") from exc
        raise QatuneError(
            f"{repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); on a connected machine "
            f"run `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) and copy the cache here, give a "
            "local folder, or set QATUNE_ALLOW_DOWNLOAD=1 to let qatune download it"
        ) from None
    check_model_folder(folder)
    return folder


def check_safe_weights(folder: str | Path, allow_pickle: bool) -> None:
    """Refuse pickle-based weights (arbitrary code on load) unless --allow-pickle."""
    path = Path(folder)
    if not path.is_dir() or allow_pickle:
        return
    if any(path.glob("*.safetensors")):
        return
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise QatuneError(
            f"holds only pickle-based weights ({pickles[0]}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle if you trust the source",
            path=path,
        )
