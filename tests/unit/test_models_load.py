"""Base-model loading: safe weights only, and plain LoRA in fp32 on a CPU."""

from __future__ import annotations

import shutil

import pytest

from qatune.console import QatuneError
from qatune.models.load import load_base
from qatune.models.placement import choose_placement
from qatune.models.resolve import check_safe_weights


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


def test_cpu_placement_is_plain_lora_fp32():
    placement = choose_placement("auto", "auto", device="cpu")
    assert (placement.device, placement.quant, placement.precision) == ("cpu", "none", "fp32")
    assert "bitsandbytes" in placement.reason
    with pytest.raises(QatuneError, match="CUDA"):
        choose_placement("4bit", "auto", device="cpu")
