"""A merged model written as one GGUF file llama.cpp loads: hyperparameters under the architecture's keys, tensors
renamed to llama.cpp's names (LLaMA's q/k rows in its rotary layout, Gemma 3's norms as plain scales), in f16 or
Q8_0, with the tokenizer and chat template in the metadata. Only what llama.cpp computes the same way is written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qatune.console import QatuneError
from qatune.portable.vocab import GGUFVocab

QUANTS = ("f16", "q8_0")


@dataclass(frozen=True)
class Arch:
    """How one transformers `model_type` maps onto a llama.cpp architecture."""

    gguf_name: str  # gguf.MODEL_ARCH member
    params: Callable[[Any, Any], None]  # (writer, config) -> architecture hyperparameters
    rotary_rows: bool = False  # LLaMA: q/k rows from rotate-half to interleaved pairs
    norm_shift: float = 0.0  # Gemma: RMSNorm scales by (1 + weight)


def write_gguf(model: Any, vocab: GGUFVocab, chat_template: str, path: Path, quant: str, name: str) -> None:
    """`model`: a merged transformers causal LM in fp32. Refuses, before writing, what llama.cpp would compute
    differently (another architecture, rope scaling, attention settings it hard-codes otherwise)."""
    import gguf

    if quant not in QUANTS:
        raise QatuneError(f"--quant {quant!r} is not one of {', '.join(QUANTS)}")
    config = model.config
    arch = architecture(config)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.gguf_name)])
    try:
        writer.add_name(name)
        writer.add_type(gguf.GGUFType.MODEL)
        file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _common_params(writer, config)
        arch.params(writer, config)
        _vocab(writer, vocab, chat_template)
        for gguf_name, array in _tensors(model, arch, gguf.MODEL_ARCH[arch.gguf_name]):
            _add_tensor(writer, gguf_name, array, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def architecture(config: Any) -> Arch:
    model_type = getattr(config, "model_type", None)
    arch = ARCHS.get(str(model_type))
    if arch is None:
        raise QatuneError(
            f"GGUF export covers {', '.join(sorted(ARCHS))} models; this model is {model_type!r} "
            "(export it as a transformers folder without --format gguf)"
        )
    return arch


def _common_params(writer: Any, config: Any) -> None:
    heads = config.num_attention_heads
    head_dim = _head_dim(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope(config: Any, layer_type: str | None = None) -> dict:
    """The rope parameters of a (layer type of a) model; only unscaled rope is written."""
    params = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", 10000.0)}
    if layer_type is not None and layer_type in params:
        params = params[layer_type]
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise QatuneError(f"GGUF export writes unscaled rope only; this model uses rope_type {kind!r}")
    return params


def _llama_params(writer: Any, config: Any) -> None:
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        raise QatuneError("GGUF export of LLaMA-family models does not cover sliding-window attention")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise QatuneError(f"llama.cpp's LLaMA graph uses silu; this model uses {config.hidden_act!r}")
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))


def _gemma3_params(writer: Any, config: Any) -> None:
    head_dim = config.head_dim
    if config.query_pre_attn_scalar != head_dim:
        raise QatuneError(
            f"llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim={head_dim}); this model uses "
            f"query_pre_attn_scalar={config.query_pre_attn_scalar}"
        )
    if getattr(config, "attn_logit_softcapping", None):
        raise QatuneError("llama.cpp's Gemma 3 graph has no attention logit soft-capping; this model sets it")
    writer.add_rope_freq_base(float(_rope(config, "full_attention")["rope_theta"]))
    layer_types = list(getattr(config, "layer_types", None) or [])
    if any(t == "sliding_attention" for t in layer_types):
        writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
        writer.add_rope_freq_base_swa(float(_rope(config, "sliding_attention")["rope_theta"]))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(config.final_logit_softcapping)


def _qwen2_params(writer: Any, config: Any) -> None:
    if getattr(config, "use_sliding_window", False):
        raise QatuneError("GGUF export of Qwen2 models does not cover sliding-window attention")
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))


ARCHS = {
    "llama": Arch("LLAMA", _llama_params, rotary_rows=True),
    "mistral": Arch("LLAMA", _llama_params, rotary_rows=True),
    "gemma3_text": Arch("GEMMA3", _gemma3_params, norm_shift=1.0),
    "qwen2": Arch("QWEN2", _qwen2_params),
}


def _vocab(writer: Any, vocab: GGUFVocab, chat_template: str) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(False)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
        "eot": writer.add_eot_token_id,
    }
    for key, token_id in vocab.special_ids.items():
        adders[key](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_chat_template(chat_template)


def _tensors(model: Any, arch: Arch, gguf_arch: Any) -> Iterator[tuple[str, Any]]:
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf_arch, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise QatuneError(f"GGUF export has no llama.cpp name for the tensor {hf_name!r}")
        array = tensor.detach().float().cpu().numpy()
        if arch.rotary_rows and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            array = _interleave_rotary(array, heads if "q_proj" in hf_name else kv_heads)
        if arch.norm_shift and hf_name.endswith("norm.weight"):
            array = array + arch.norm_shift
        yield gguf_name, array


def _interleave_rotary(weight: Any, heads: int) -> Any:
    """transformers rotates the two halves of each head; llama.cpp's LLaMA rope rotates adjacent pairs."""
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _add_tensor(writer: Any, name: str, array: Any, quant: str) -> None:
    import gguf
    import numpy as np

    if array.ndim == 1:
        writer.add_tensor(name, array.astype(np.float32))
    elif quant == "q8_0" and array.shape[-1] % 32 == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    else:
        writer.add_tensor(name, array.astype(np.float16))
