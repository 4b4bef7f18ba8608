"""LoRA adapters on a base model: the config, attaching it (target names checked against the model's linear
layers), and loading saved adapters by name onto one base."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


def adapters_in(model: Any, dtype: Any) -> None:
    """For answering: the loaded adapters' weights in the base's bf16 (peft keeps them in fp32), so no LoRA layer
    casts its input to fp32 and back at every call (a quarter of a grounded answer's time on long prompts). Only
    bf16: fp16 has too little range for some adapters, and fp32 bases need nothing."""
    import torch

    if dtype != torch.bfloat16:
        return
    for name, param in model.named_parameters():
        if "lora_" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)


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
