"""`qatune export`: one adapter merged into an unquantized copy of its base, saved as a plain transformers folder
(safetensors, tokenizer, chat template) or as one GGUF file for llama.cpp, Ollama and LM Studio (with an Ollama
Modelfile), with a model card describing the training data and the evaluation; neither needs peft or qatune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, info
from qatune.portable.card import GGUF_FILE, MARKER, Exported, describe, modelfile
from qatune.portable.gguf_file import QUANTS
from qatune.rag import closed_book
from qatune.rundir import RunDir, check_name
from qatune.storage import atomic_dir

if TYPE_CHECKING:
    from qatune.config import Config

DTYPES = ("bf16", "fp16", "fp32")
FORMATS = ("transformers", "gguf")
__all__ = ["DTYPES", "FORMATS", "MARKER", "QUANTS", "export"]
_RUN_PARTS = ("models_dir", "checkpoints_dir", "data_dir", "train_dir", "eval_root", "report_dir")


def export(
    run: Path,
    model_name: str = "best",
    out: Path | None = None,
    dtype: str = "bf16",
    fmt: str = "transformers",
    quant: str | None = None,
) -> Path:
    """`fmt` gguf: one GGUF file (`quant` f16 or q8_0; merged in fp32 first) and an Ollama Modelfile."""
    from qatune.config import load_for_run

    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found; check --run", path=rundir.root)
    weights = _check_form(fmt, dtype, quant)
    model_name = closed_book(model_name)  # one set of weights answers both ways
    adapter = _adapter_dir(rundir, model_name)
    if out is None:
        raise QatuneError("give the folder to write with --out DIR")
    target = _check_target(Path(out), rundir)
    config = load_for_run(rundir.root, None, {}, save=False)
    gguf = fmt == "gguf"
    if gguf:  # before any weight is read: an architecture the writer does not cover is refused at once
        _check_gguf_architecture(config)
    info(f"merging {model_name} into {'a GGUF ' if gguf else 'a '}{weights} copy of {config.model} -> {target}")
    with atomic_dir(target) as tmp:
        merged, tokenizer = _merged(config, adapter, "fp32" if gguf else dtype)
        ollama = None
        if gguf:
            ollama = _write_gguf(tmp / GGUF_FILE, merged, tokenizer, weights, f"{rundir.root.name}-{model_name}")
        else:
            merged.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        del merged
        describe(tmp, Exported(rundir, model_name, config, target.name, weights, gguf), ollama)
        _check_folder(tmp, gguf)
    return target


def _check_form(fmt: str, dtype: str, quant: str | None) -> str:
    """The weights' type: the dtype of a transformers folder, the quantization of a GGUF file."""
    if fmt not in FORMATS:
        raise QatuneError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "gguf":
        if quant not in (None, *QUANTS):
            raise QatuneError(f"--quant {quant!r} is not one of {', '.join(QUANTS)}")
        return quant or "f16"
    if quant is not None:
        raise QatuneError("--quant applies to --format gguf only; a transformers folder takes --dtype")
    if dtype not in DTYPES:
        raise QatuneError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)} (4-bit weights are never exported)")
    return dtype


def _check_gguf_architecture(config: Config) -> None:
    from transformers import AutoConfig

    from qatune.models.resolve import resolve_model
    from qatune.portable.gguf_file import architecture

    architecture(AutoConfig.from_pretrained(resolve_model(config.model), trust_remote_code=config.trust_remote_code))


def _write_gguf(path: Path, merged: Any, tokenizer: Any, quant: str, name: str) -> str:
    """The GGUF file; returns the Modelfile that runs it in Ollama."""
    from qatune.portable.gguf_file import write_gguf
    from qatune.portable.vocab import gguf_vocab
    from qatune.prompts import end_of_turn_id

    vocab = gguf_vocab(tokenizer, merged.get_input_embeddings().weight.shape[0], end_of_turn_id(tokenizer))
    write_gguf(merged, vocab, tokenizer.chat_template, path, quant, name)
    return modelfile(tokenizer, add_bos=vocab.add_bos)


def _adapter_dir(rundir: RunDir, model_name: str) -> Path:
    if model_name == "base":
        raise QatuneError("'base' has no adapter to merge: export a fine-tuned model (best or epoch-N)")
    check_name(model_name, "model name")
    available = rundir.adapter_names()
    if model_name not in available:
        raise QatuneError(
            f"no model {model_name!r} in {rundir.models_dir}; available: "
            f"{', '.join(available) or 'none (run qatune train)'}"
        )
    return rundir.model_dir(model_name)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_target(out: Path, rundir: RunDir) -> Path:
    """Never write over the run (or any folder holding it), its outputs, or a folder that is not ours."""
    target = out.expanduser().resolve()
    if _inside(rundir.root, target):
        raise QatuneError("--out would replace the run directory itself; choose a folder outside it", path=target)
    for part in _RUN_PARTS:
        if _inside(target, getattr(rundir, part)):
            raise QatuneError(
                f"--out is inside the run's {getattr(rundir, part).name}/ folder, which qatune "
                "manages; choose another folder",
                path=target,
            )
    if target.exists():
        if not target.is_dir():
            raise QatuneError("--out exists and is not a folder", path=target)
        if any(target.iterdir()) and not (target / MARKER).exists():
            raise QatuneError(
                "--out is a folder with other files in it; choose a new or empty folder "
                "(an earlier export is replaced whole)",
                path=target,
            )
    return target


def _merged(config: Config, adapter: Path, dtype: str) -> tuple[Any, Any]:
    """Base loaded unquantized in `dtype` (even when training used 4-bit), adapter merged into its weights."""
    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import load_adapters
    from qatune.models.placement import Placement
    from qatune.models.resolve import resolve_model
    from qatune.prompts import ensure_chat_template, stop_token_ids

    model_path = resolve_model(config.model)
    placement = Placement("cpu", "none", dtype, "export: unquantized merge")
    base = load_base(
        model_path, placement, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle
    )
    merged = load_adapters(base, {"export": adapter}, allow_pickle=config.allow_pickle).merge_and_unload()
    has_tokenizer = (adapter / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(
        str(adapter) if has_tokenizer else model_path, trust_remote_code=config.trust_remote_code
    )
    ensure_chat_template(tokenizer)
    stops = stop_token_ids(tokenizer)
    # plain `model.generate` then stops at the end-of-turn token too, as qatune's own generation does
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.config.pad_token_id = tokenizer.pad_token_id
    return merged, tokenizer


def _check_folder(folder: Path, gguf: bool) -> None:
    if gguf:
        if not (folder / GGUF_FILE).is_file():
            raise QatuneError("the GGUF file was not written", path=folder)
        return
    if not any(folder.glob("*.safetensors")):
        raise QatuneError("the merged weights were not written as safetensors", path=folder)
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith("adapter_")]
    if leftovers:
        raise QatuneError(f"the export still holds adapter files ({leftovers[0]})", path=folder)
