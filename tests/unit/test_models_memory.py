"""Memory estimates from config.json alone, and the early refusal of a model that cannot fit: a Llama-70B
folder (config, tokenizer, a 141 GB sparse model.safetensors) is refused in seconds, in one line, before a weight
is read, and `train` refuses it before it loads the tokenizer, the MiniLM embedder or the data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qatune.console import QatuneError
from qatune.models import memory
from qatune.models.load import load_base
from qatune.models.memory import GB, check_fits, need, shape_from_config
from qatune.models.placement import Placement

LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
GEMMA3_270M = {
    "model_type": "gemma3_text",
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "vocab_size": 262144,
    "tie_word_embeddings": True,
}
SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


@pytest.fixture
def llama_70b(tmp_path, tiny_model_dir) -> Path:
    folder = tmp_path / "Llama-3.1-70B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_70B))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(141 * 10**9)  # sparse: no block is written
    return folder


@pytest.mark.parametrize(
    ("config", "expected"),
    [(LLAMA_70B, 70.55e9), (GEMMA3_270M, 268.1e6), (SMOLLM2_135M, 134.5e6)],
    ids=["llama-70b", "gemma3-270m", "smollm2-135m"],
)
def test_parameter_count_from_the_config(config, expected):
    assert shape_from_config(config).params == pytest.approx(expected, rel=0.005)


def test_quantization_and_precision_shrink_the_estimate():
    shape = shape_from_config(LLAMA_70B)
    fp32 = need(shape, "none", "fp32", training=True, tokens=1024)
    bf16 = need(shape, "none", "bf16", training=True, tokens=1024)
    q4 = need(shape, "4bit", "bf16", training=True, tokens=1024)
    assert fp32.weights == 2 * bf16.weights
    assert 35 * GB < q4.weights < 45 * GB < 130 * GB < bf16.weights
    assert 5 * GB < bf16.lora < 8 * GB  # r=32 on every linear layer: 414M trainable parameters
    assert bf16.activations > 0


def test_the_70b_folder_is_refused_before_any_weight_is_read(llama_70b, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    placement = Placement("cpu", "none", "bf16", "test")
    with pytest.raises(QatuneError) as err:
        load_base(str(llama_70b), placement, for_training=True)
    message = str(err.value)
    assert "70.6B parameters" in message and "GB available on cpu" in message
    assert "a CUDA GPU with --quant 4bit" in message and "a smaller model" in message
    with pytest.raises(QatuneError, match="--precision bf16"):
        check_fits(llama_70b, Placement("cpu", "none", "fp32", "test"), training=False)


def test_the_cli_refuses_the_70b_folder_in_seconds_with_one_line(llama_70b, tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "qatune", "run", "--out", str(tmp_path / "run"), "--model", str(llama_70b), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QATUNE_DEBUG": "0"},
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "needs ~" in lines[0], proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert not (tmp_path / "run" / "data").exists()  # refused before prepare


def test_train_refuses_the_70b_folder_before_the_tokenizer_the_embedder_or_the_data(llama_70b, tmp_path, monkeypatch):
    """The memory check needs only config.json, so it comes first: no tokenizer, no MiniLM (grounded examples),
    no tokenized split is loaded before the refusal."""
    import sentence_transformers
    from transformers import AutoTokenizer

    from qatune.config import load_for_run
    from qatune.storage import write_jsonl
    from qatune.train import setup as setup_mod
    from qatune.train import train

    run = tmp_path / "run"
    pairs = [{"id": str(i), "question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(4)]
    write_jsonl(run / "data" / "train.jsonl", pairs[:3])
    write_jsonl(run / "data" / "val.jsonl", pairs[3:])
    config = load_for_run(run, None, {"model": str(llama_70b), "train": {"grounded": True}})
    loaded: list[str] = []

    def refuse(what: str):
        def load(*args, **kwargs):
            loaded.append(what)
            raise AssertionError(f"{what} loaded before the memory check")

        return load

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse("tokenizer"))
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse("MiniLM"))
    monkeypatch.setattr(setup_mod, "load_examples", refuse("tokenized examples"))
    with pytest.raises(QatuneError, match=r"Llama-3.1-70B \(70.6B parameters\) needs ~"):
        train(run, config)
    assert loaded == []
    assert not (run / "train").exists() and not (run / "models").exists()


def test_a_model_that_fits_passes(tiny_model_dir):
    wanted = check_fits(tiny_model_dir, Placement("cpu", "none", "fp32", "test"), training=True, tokens=1024)
    assert wanted is not None and wanted.total < memory.available("cpu")
