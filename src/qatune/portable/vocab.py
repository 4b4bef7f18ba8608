"""A Hugging Face fast tokenizer as llama.cpp's GGUF tokenizer metadata: byte-level BPE as `gpt2` (vocab, merges,
the pre-tokenizer named as llama.cpp knows it) and byte-fallback BPE (Gemma, Llama 2, Mistral) as `llama`
(SentencePiece scores from the merge order), with token types, special token ids and BOS/EOS insertion."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qatune.console import QatuneError

# llama.cpp's token types (gguf.TokenType), kept here so this module imports without gguf
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# The split regexes of byte-level BPE tokenizers llama.cpp implements, by its pre-tokenizer name.
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = _WORDS + r"\p{N}{1,3}" + _REST
QWEN2_SPLIT = _WORDS + r"\p{N}" + _REST
_SPLITS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
_NEVER = -1e9


@dataclass
class GGUFVocab:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE with byte fallback)
    pre: str  # llama.cpp's pre-tokenizer name
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, eot -> id
    add_bos: bool = False
    add_eos: bool = False


def gguf_vocab(tokenizer: Any, rows: int, end_of_turn: int | None) -> GGUFVocab:
    """The metadata of `tokenizer` for an embedding matrix of `rows` tokens (unused ids are padded)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise QatuneError("GGUF export needs a fast tokenizer (tokenizer.json); this model has only a slow one")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise QatuneError(f"GGUF export covers BPE tokenizers; this model's is {model.get('type')!r}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    tokens, types = _tokens(tokenizer, rows)
    if model.get("byte_fallback"):
        vocab = GGUFVocab("llama", "default", tokens, types, scores=_spm_scores(tokens, merges))
        vocab.types = [BYTE if _is_byte(t) and k == NORMAL else k for t, k in zip(tokens, types, strict=True)]
    else:
        vocab = GGUFVocab("gpt2", _pre_name(spec.get("pre_tokenizer")), tokens, types, merges=merges)
    vocab.special_ids = _special_ids(tokenizer, end_of_turn)
    probe = tokenizer("a").input_ids
    vocab.add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    vocab.add_eos = tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id]
    return vocab


def _tokens(tokenizer: Any, rows: int) -> tuple[list[str], list[int]]:
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= rows:
        raise QatuneError(f"the tokenizer has ids up to {max(by_id)} but the embedding only {rows} rows")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(rows):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        text = by_id[i]
        tokens.append(text)
        if i in added:
            types.append(CONTROL if added[i].special or _looks_special(text) else USER_DEFINED)
        else:
            types.append(NORMAL)
    return tokens, types


def _looks_special(text: str) -> bool:
    """Added tokens some tokenizers leave unmarked that llama.cpp must treat as control tokens."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _is_byte(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _spm_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece merges the adjacent pair whose joined piece scores highest; BPE the pair of lowest merge rank.
    A piece scored by minus the rank of the first merge that makes it gives llama.cpp the same order; a longer
    piece no merge makes (an added token) scores too low to be formed."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        rank.setdefault(left + right, i)
    return [-float(rank[t]) if t in rank else (0.0 if len(t) == 1 else _NEVER) for t in tokens]


def _pre_name(pre: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer (how text is split before the merges)."""
    parts = (pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]) if pre else []
    kinds = [p.get("type") for p in parts]
    byte_level = next((p for p in parts if p.get("type") == "ByteLevel"), None)
    if byte_level is not None:
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level.get("use_regex"):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
            regex = (parts[0].get("pattern") or {}).get("Regex")
            if regex in _SPLITS:
                return _SPLITS[regex]
    raise QatuneError(
        f"GGUF export does not know this tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}); "
        "llama.cpp would split text differently from the model's tokenizer"
    )


def _special_ids(tokenizer: Any, end_of_turn: int | None) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "eot": end_of_turn if end_of_turn != tokenizer.eos_token_id else None,
    }
    return {name: int(i) for name, i in ids.items() if i is not None}
