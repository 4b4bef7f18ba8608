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
