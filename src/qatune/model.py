"""Base models and adapters: what `--model` names (embedded models and .gguf files through qatune.embedded, local
folders, hub ids already in the local cache) checked before loading; device/precision/quantization choice; LoRA
attach (targets checked against the model's linear layers), load and merge. bitsandbytes is imported only here."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError
from qatune.embedded import cached_gguf, embedded, resolve_embedded

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
    from qatune.footprint import check_fits

    model_path = resolve_model(config.model)
    placement = choose_placement(config.train.quant, config.train.precision, cpu_bf16=True)
    lora_r = config.train.lora_r
    check_fits(model_path, placement, training=True, tokens=config.train.max_length, lora_r=lora_r)
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
    batch_tokens: int = 512,
) -> PreTrainedModel:
    """`batch_tokens`: tokens per training step, for the memory estimate checked before any weight is read."""
    from transformers import AutoModelForCausalLM

    from qatune.footprint import check_fits

    check_safe_weights(model_path, allow_pickle)
    check_fits(model_path, placement, training=for_training, tokens=batch_tokens)
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


def linear_layer_names(model: Any) -> list[str]:
    """The distinct last names of the model's linear layers (what a LoRA target name matches)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)}
    )


def _check_targets(model: Any, targets: Any) -> None:
    """A target name must match a module (`name` or `*.name`); peft would fail later, or not at all."""
    if isinstance(targets, str):
        return  # all-linear, or a regular expression peft matches itself
    names = [n for n, _ in model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise QatuneError(
            f"cannot attach LoRA: target module {sorted(unmatched)[0]!r} matches no layer of this model; its linear "
            f"layers are {', '.join(linear_layer_names(model))} (or use all-linear)"
        )


def attach_lora(model: PreTrainedModel, config: Any) -> Any:
    from peft import get_peft_model

    _check_targets(model, config.target_modules)
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
