"""Loading a base model for training or decoding: its tokenizer (a pad token set), its weights on the chosen
placement after the memory check (4-bit or 8-bit through bitsandbytes, imported only here), prepared for k-bit
training when quantized."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError
from qatune.models.memory import check_fits
from qatune.models.resolve import check_safe_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from qatune.models.placement import Placement


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
