"""GGUF files as plain safetensors folders: a .gguf (a user's, or an embedded model's) dequantized once into a
folder under $QATUNE_HOME that Trainer and save_pretrained accept, after checking that the conversion fits in
memory."""

from __future__ import annotations

from pathlib import Path

from qatune.console import QatuneError, info
from qatune.models.memory import GB, OVERHEAD, available
from qatune.storage import atomic_dir, atomic_write_json, file_sha256, qatune_home


def check_gguf_conversion(gguf: Path) -> None:
    """Dequantizing holds the fp32 model about twice (GGUF load, rebuilt model); refuse before reading tensors."""
    from gguf import GGUFReader

    try:
        params = sum(int(t.n_elements) for t in GGUFReader(str(gguf)).tensors)
    except Exception:  # unreadable metadata: the conversion reports it as one line
        return
    wanted = params * 4 * 2 + OVERHEAD
    free = available("cpu")
    if wanted > free:
        raise QatuneError(
            f"converting this GGUF ({params / 1e9:.1f}B parameters) to safetensors needs ~{wanted / GB:.1f} GB of "
            f"memory; {free / GB:.1f} GB available; try a smaller model or a machine with more memory",
            path=gguf,
        )


def cached_gguf(gguf: Path) -> Path:
    """A user's .gguf, converted once into a folder named by the file's sha256."""
    target = qatune_home() / "models" / f"gguf-{file_sha256(gguf)[:16]}"
    if not (target / "config.json").exists():
        convert_gguf(gguf, target)
    return target


def convert_gguf(gguf: Path, target: Path, source: dict | None = None) -> None:
    """Dequantize a GGUF once and save a plain safetensors folder that Trainer and save_pretrained accept."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_gguf_conversion(gguf)
    info(f"converting {gguf.name} to safetensors (once) -> {target}")
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unreadable GGUF files
        raise QatuneError(f"cannot read this GGUF ({type(exc).__name__}: {exc})", path=gguf) from exc
    config = AutoConfig.for_model(
        **{k: v for k, v in quantized.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    )
    state = quantized.state_dict()
    del quantized
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise QatuneError(
            f"GGUF tensors do not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})",
            path=gguf,
        )
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A pad distinct from EOS: padding is masked by attention mask, EOS must stay a learned token.
        if tokenizer.unk_token is not None and tokenizer.unk_token != tokenizer.eos_token:
            tokenizer.pad_token = tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "qatune_source.json", source or {"gguf": str(gguf), "sha256": file_sha256(gguf)})
