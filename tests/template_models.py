"""Tiny random models of common families: each family's architecture (from a config), its special tokens in a
byte-level BPE tokenizer trained in-process, and its published chat template (tests/fixtures/templates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "templates"
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_CORPUS = [
    "What is the title of this course? The course is Deep Learning.",
    "Who is the instructor? Professor Ada Lovelace teaches on Mondays at 10:00 in Room 101.",
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024. You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-",
]


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # file under tests/fixtures/templates
    arch: str  # transformers model_type
    eos: str
    end_of_turn: str  # the token that closes an assistant turn
    specials: tuple[str, ...]  # the family's other special tokens
    bos: str | None = None
    system_role: bool = True  # False: the template raises on a system message
    targets: tuple[str, ...] = LLAMA_TARGETS

    def chat_template(self) -> str:
        return (TEMPLATES / self.template).read_text(encoding="utf-8")


FAMILIES = [
    Family(
        "llama3",
        "llama3.jinja",
        "llama",
        eos="<|eot_id|>",
        end_of_turn="<|eot_id|>",
        bos="<|begin_of_text|>",
        specials=("<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"),
    ),
    Family(
        "qwen2.5",
        "qwen2_5.jinja",
        "qwen2",
        eos="<|im_end|>",
        end_of_turn="<|im_end|>",
        specials=("<|im_start|>", "<|endoftext|>"),
    ),
    Family(
        "mistral-v0.3",
        "mistral_v0_3.jinja",
        "mistral",
        eos="</s>",
        end_of_turn="</s>",
        bos="<s>",
        specials=("[INST]", "[/INST]", "<unk>"),
        system_role=False,
    ),
    Family(
        "gemma2",
        "gemma2.jinja",
        "gemma2",
        eos="<eos>",
        end_of_turn="<end_of_turn>",
        bos="<bos>",
        specials=("<start_of_turn>", "<end_of_turn>", "<pad>"),
        system_role=False,
    ),
    Family(
        "gemma3",
        "gemma3.jinja",
        "gemma3_text",
        eos="<eos>",
        end_of_turn="<end_of_turn>",
        bos="<bos>",
        specials=("<start_of_turn>", "<end_of_turn>", "<pad>"),
    ),
    Family(
        "phi3",
        "phi3.jinja",
        "phi3",
        eos="<|endoftext|>",
        end_of_turn="<|end|>",
        bos="<s>",
        specials=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        targets=PHI3_TARGETS,
    ),
    Family(
        "phi4",
        "phi4.jinja",
        "phi3",
        eos="<|im_end|>",
        end_of_turn="<|im_end|>",
        specials=("<|im_start|>", "<|im_sep|>", "<|endoftext|>"),
        targets=PHI3_TARGETS,
    ),
    Family(
        "smollm2",
        "smollm2.jinja",
        "llama",
        eos="<|im_end|>",
        end_of_turn="<|im_end|>",
        bos="<|im_start|>",
        specials=("<|endoftext|>",),
    ),
]


def build_family_model(
    folder: Path, family: Family, seed: int = 0, corpus: list[str] | None = None, vocab_size: int = 420, **config: Any
) -> Path:
    """A random model of the family's architecture with its special tokens and chat template: 2 layers, 32 wide,
    unless `config` says otherwise; the tokenizer learns its merges from `corpus` (a few sentences by default)."""
    from tiny_models import save_random_model, train_tokenizer

    specials = list(dict.fromkeys([t for t in (family.bos, family.eos, *family.specials) if t] + ["<pad_x>"]))
    tokenizer = train_tokenizer(
        corpus or _CORPUS,
        specials,
        vocab_size,
        eos_token=family.eos,
        bos_token=family.bos,
        pad_token="<pad_x>",
        additional_special_tokens=[t for t in family.specials if t not in (family.bos, family.eos)],
    )
    tokenizer.chat_template = family.chat_template()
    save_random_model(folder, tokenizer, family.arch, seed, **{"head_dim": 8, **config})
    return folder
