"""Adapters: loaded by name on one base, safetensors only."""

from __future__ import annotations

import pytest
import torch

from qatune.console import QatuneError
from qatune.models.load import load_base
from qatune.models.lora import _check_adapter, attach_lora, load_adapters, lora_config
from qatune.models.placement import choose_placement


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
