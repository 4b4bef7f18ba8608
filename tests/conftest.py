"""Shared fixtures: an isolated HOME and cache, no network, and a tiny random chat model built from a
config (byte-level BPE tokenizer trained in-process, ChatML template) for fast offline tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub, which reads these once at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: no spinning threads on shared cores

SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "What is the title of this course? The course is Deep Learning.",
    "Who is the instructor? Professor Ada Lovelace teaches on Mondays at 10:00 in Room 101.",
    "How is the grade computed? Homework 40%, midterm 20%, final project 40%.",
    "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-",
]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test touches the real HOME or reaches a hub; the converted default model is shared per session."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("QATUNE_HOME", str(_shared_qatune_home(tmp_path_factory)))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _shared_qatune_home(factory) -> Path:
    base = os.environ.get("QATUNE_TEST_HOME")
    if base:
        return Path(base)
    root = factory.getbasetemp() / "qatune_home"
    root.mkdir(exist_ok=True)
    return root


def build_tiny_model(folder: Path, *, arch: str = "llama", seed: int = 0, init_std: float = 0.02) -> Path:
    """A 2-layer random model + trained byte-level BPE tokenizer, saved like a hub folder.

    The default init makes a near-constant model; a larger `init_std` gives context-dependent output."""
    from tiny_models import save_random_model, train_tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tokenizer = train_tokenizer(
        _CORPUS,
        specials,
        400,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHATML
    return save_random_model(folder, tokenizer, arch, seed, initializer_range=init_std)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def lively_model_dir(tmp_path_factory) -> Path:
    """A tiny model whose greedy output depends on the prompt (for decoding-equality tests)."""
    return build_tiny_model(tmp_path_factory.mktemp("lively") / "tiny-llama", init_std=0.3)


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    if not SEED_DIR.is_dir():
        pytest.skip("../shared/seed is not beside the checkout")
    return SEED_DIR


@pytest.fixture(scope="session")
def llama_cpp():
    """llama-cpp-python (the `llamacpp` extra); `make test` sets QATUNE_REQUIRE_LLAMACPP=1, so there a missing one
    fails instead of skipping."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("QATUNE_REQUIRE_LLAMACPP") == "1":
            raise
        pytest.skip("llama-cpp-python is not installed (make llamacpp)")
    return llama_cpp
