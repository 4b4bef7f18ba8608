"""The embedded default model: converted once from the shipped GGUF, cached, then loaded from the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qatune.generate import BASE, Engine
from qatune.models.embedded import default_gguf_path
from qatune.models.load import load_base, load_tokenizer
from qatune.models.placement import choose_placement
from qatune.models.resolve import resolve_model
from qatune.prompts import messages_for

pytestmark = pytest.mark.slow


def test_default_model_is_cached_and_answers():
    path = Path(resolve_model("default"))
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_model("default")) == path  # second call: from the cache, no conversion
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert str(path).startswith(os.environ["QATUNE_HOME"])

    tokenizer = load_tokenizer(str(path))
    model = load_base(str(path), choose_placement())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.pad_token != tokenizer.eos_token
    engine = Engine(model, tokenizer, [], "cpu")
    answer = engine.generate(BASE, [messages_for("What is the capital of France?")], max_new_tokens=20)[0]
    assert "Paris" in answer.text and answer.stopped


def test_any_gguf_file_is_accepted(tmp_path):
    user_copy = tmp_path / "my-model.gguf"
    user_copy.symlink_to(default_gguf_path())
    path = Path(resolve_model(str(user_copy)))
    assert path.name.startswith("gguf-") and (path / "config.json").exists()
