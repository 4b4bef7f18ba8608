"""Will the model fit? Memory for the weights, LoRA with its AdamW state, and activations, estimated from the
model's config.json (or a GGUF's metadata) and the placement before any weight is read, and a one-line refusal
naming what it needs, what is there and what to try when it cannot fit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError

if TYPE_CHECKING:
    from qatune.models.placement import Placement

GB = 1024**3
OVERHEAD = 0.6 * GB  # torch, tokenizer and allocator slack
NOT_GATED = {"gpt2", "gpt_neox", "gptj", "phi", "falcon", "opt", "bloom", "gpt_bigcode", "starcoder2", "codegen"}
EVAL_ROWS, EVAL_TOKENS = 64, 512  # decoding: batch of 64 rows, prompt + answer
NLL_ROWS = 8  # answer NLL scoring: logits over the whole vocabulary at every position of 8 rows


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a config: parameter count and the sizes activations scale with."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_dim: int  # key/value width per layer (KV cache)
    lora_width: int  # sum of in + out features of one layer's linear modules (LoRA params per rank)
    quantizable: int  # parameters in linear layers of the blocks (4/8-bit applies to these only)


def shape_from_config(cfg: dict[str, Any]) -> Shape:
    """Parameter count from the architecture fields common to decoder-only configs (MoE experts counted)."""
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg, **cfg["text_config"]}
    h = int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 0)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers") or 0)
    vocab = int(cfg.get("vocab_size") or 0)
    if not (h and layers and vocab):
        raise ValueError("config.json lacks hidden_size, num_hidden_layers or vocab_size")
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head") or 1)
    head_dim = int(cfg.get("head_dim") or h // heads)
    kv = int(cfg.get("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    inter = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * h)
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 1)
    moe_inter = int(cfg.get("moe_intermediate_size") or inter) if experts > 1 else inter
    mats = 2 if cfg.get("model_type") in NOT_GATED else 3
    attn = 2 * h * q + 2 * h * kv
    mlp = mats * h * moe_inter * experts
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return Shape(
        params=embed + layers * (attn + mlp),
        layers=layers,
        hidden=h,
        intermediate=inter,
        vocab=vocab,
        kv_dim=kv,
        lora_width=2 * (h + q) + 2 * (h + kv) + mats * (h + inter),
        quantizable=layers * (attn + mlp),
    )


def folder_shape(folder: Path) -> Shape | None:
    """The shape of a model folder from config.json alone (weights are never opened); None when unreadable."""
    try:
        return shape_from_config(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Need:
    weights: float
    lora: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.lora + self.activations + OVERHEAD


def need(shape: Shape, quant: str, precision: str, *, training: bool, tokens: int, lora_r: int = 32) -> Need:
    """Bytes needed. 4/8-bit quantizes the blocks' linear layers only; embeddings stay in the compute dtype."""
    width = {"bf16": 2, "fp16": 2, "fp32": 4}[precision]
    if quant in ("4bit", "8bit"):
        per = 0.56 if quant == "4bit" else 1.06  # NF4 + double-quantized scales / int8 + scales
        weights = shape.quantizable * per + (shape.params - shape.quantizable) * width
    else:
        weights = shape.params * width
    if not training:
        kv = EVAL_ROWS * EVAL_TOKENS * shape.layers * 2 * shape.kv_dim * width
        return Need(weights, 0.0, kv + NLL_ROWS * EVAL_TOKENS * shape.vocab * (width + 4))
    lora = shape.layers * lora_r * shape.lora_width * 4 * 4  # fp32 weight, gradient, two AdamW moments
    kept = tokens * shape.layers * (10 * shape.hidden + 4 * shape.intermediate) * width
    logits = tokens * shape.vocab * 4 * 2 // 2  # fp32 logits and their gradient, at about half the positions
    return Need(weights, lora, kept + logits)


def available(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return float(psutil.virtual_memory().available)


def check_fits(
    model_path: str | Path, placement: Placement, *, training: bool, tokens: int = 512, lora_r: int = 32
) -> Need | None:
    """Refuse, before loading, a model that cannot fit in memory on `placement`; None when the shape is unknown."""
    shape = folder_shape(Path(model_path))
    if shape is None:
        return None
    wanted = need(shape, placement.quant, placement.precision, training=training, tokens=tokens, lora_r=lora_r)
    free = available(placement.device)
    if wanted.total <= free:
        return wanted
    what = "train" if training else "run"
    raise QatuneError(
        f"{Path(model_path).name} ({shape.params / 1e9:.1f}B parameters) needs ~{wanted.total / GB:.1f} GB to {what} "
        f"as {_as(placement)} (weights {wanted.weights / GB:.1f} GB, LoRA and optimizer {wanted.lora / GB:.1f} GB, "
        f"activations {wanted.activations / GB:.1f} GB); {free / GB:.1f} GB available on {placement.device}; "
        f"try {_options(shape, placement, training, tokens, lora_r, free)}"
    )


def _as(placement: Placement) -> str:
    return f"{placement.quant} {placement.precision}" if placement.quant != "none" else placement.precision


def _options(shape: Shape, placement: Placement, training: bool, tokens: int, lora_r: int, free: float) -> str:
    """What could make it fit, each with its own estimate."""
    tries = []
    if placement.precision == "fp32":
        bf16 = need(shape, "none", "bf16", training=training, tokens=tokens, lora_r=lora_r).total
        tries.append(f"--precision bf16 (~{bf16 / GB:.1f} GB)")
    q4 = need(shape, "4bit", "bf16", training=training, tokens=tokens, lora_r=lora_r).total
    if placement.device.startswith("cuda") and placement.quant != "4bit":
        tries.append(f"--quant 4bit (~{q4 / GB:.1f} GB)")
    elif not placement.device.startswith("cuda"):
        tries.append(f"a CUDA GPU with --quant 4bit (~{q4 / GB:.1f} GB)")
    else:
        tries.append(f"a GPU with more than {q4 / GB:.0f} GB free")
    tries.append("a smaller model")
    return ", ".join(tries[:-1]) + " or " + tries[-1]
