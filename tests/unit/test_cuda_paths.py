"""The CUDA branches, decided on this CPU with torch.cuda patched: placement (QLoRA on a bf16 GPU, fp16 on an
older one, plain LoRA without bitsandbytes), the 4-bit and 8-bit loading arguments, Liger selection, the mixed
precision handed to accelerate, and the NaN guard left to fp16's gradient scaler. What needs a real GPU is in
tests/gpu."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from qatune.console import QatuneError
from qatune.models.load import load_base
from qatune.models.placement import Placement, choose_placement


@pytest.fixture
def cuda(monkeypatch):
    """A CUDA machine as far as qatune can tell: set `.bf16` and `.bnb` (bitsandbytes installed) per test."""
    gpu = SimpleNamespace(bf16=True, bnb=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu.bf16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (80 << 30, 80 << 30))
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "bitsandbytes":
            return SimpleNamespace(name=name) if gpu.bnb else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return gpu


def test_bf16_gpu_with_bitsandbytes_gets_qlora(cuda):
    placement = choose_placement()
    assert (placement.device, placement.quant, placement.precision) == ("cuda", "4bit", "bf16")
    assert placement.reason == "CUDA: QLoRA, 4-bit NF4 + double quantization, bf16 compute"
    assert placement.dtype == torch.bfloat16
    assert choose_placement("8bit").quant == "8bit" and choose_placement("none").quant == "none"
    assert choose_placement(precision="fp32").precision == "fp32"


def test_gpu_without_bf16_computes_in_fp16(cuda):
    cuda.bf16 = False
    placement = choose_placement()
    assert (placement.quant, placement.precision, placement.dtype) == ("4bit", "fp16", torch.float16)


def test_gpu_without_bitsandbytes_falls_back_to_plain_lora_or_says_what_to_install(cuda):
    cuda.bnb = False
    placement = choose_placement()
    assert (placement.quant, placement.precision) == ("none", "bf16")
    assert "pip install 'qatune[gpu]'" in placement.reason
    with pytest.raises(QatuneError, match=r"--quant 4bit needs bitsandbytes: pip install 'qatune\[gpu\]'"):
        choose_placement("4bit")


def test_an_explicit_device_overrides_detection(cuda):
    assert choose_placement(device="cpu").device == "cpu"
    assert choose_placement(device="cuda:1").device == "cuda:1"


class _Loaded(Exception):
    """Raised by the patched from_pretrained: the arguments are all the test needs."""


def _load_kwargs(monkeypatch, model_dir, placement: Placement, **kwargs) -> dict:
    from transformers import AutoModelForCausalLM

    seen: dict = {}

    def from_pretrained(path, **kw):
        seen.update(kw, path=path)
        raise _Loaded

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(_Loaded):
        load_base(str(model_dir), placement, **kwargs)
    return seen


def test_4bit_loading_asks_for_nf4_double_quantization_on_this_process_gpu(cuda, tiny_model_dir, monkeypatch):
    from transformers import BitsAndBytesConfig

    kwargs = _load_kwargs(monkeypatch, tiny_model_dir, Placement("cuda", "4bit", "bf16", "test"))
    quant = kwargs["quantization_config"]
    assert isinstance(quant, BitsAndBytesConfig)
    assert quant.load_in_4bit and not quant.load_in_8bit
    assert (quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant) == ("nf4", True)
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
    assert kwargs["device_map"] == {"": 0} and kwargs["use_safetensors"] is True
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a DDP run loads onto the second GPU
    fp16 = _load_kwargs(monkeypatch, tiny_model_dir, Placement("cuda", "4bit", "fp16", "test"))
    assert fp16["device_map"] == {"": 1} and fp16["quantization_config"].bnb_4bit_compute_dtype == torch.float16


def test_8bit_and_unquantized_loading(cuda, tiny_model_dir, monkeypatch):
    eight = _load_kwargs(monkeypatch, tiny_model_dir, Placement("cuda", "8bit", "bf16", "test"))
    assert eight["quantization_config"].load_in_8bit and not eight["quantization_config"].load_in_4bit
    plain = _load_kwargs(monkeypatch, tiny_model_dir, Placement("cuda", "none", "bf16", "test"))
    assert "quantization_config" not in plain and "device_map" not in plain


def test_quantized_base_is_prepared_for_training_and_never_moved(cuda, tiny_model_dir, monkeypatch):
    """k-bit weights are placed by from_pretrained (device_map); `.to()` on them would fail. Training gets
    peft's k-bit preparation, without gradient checkpointing (the config decides that separately)."""
    import peft
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained
    moves, prepared = [], []

    def from_pretrained(path, **kw):
        kw.pop("quantization_config"), kw.pop("device_map")
        model = real(path, **kw)
        model.to = lambda *a, **k: moves.append(a)
        return model

    def prepare(model, use_gradient_checkpointing=True):
        prepared.append(use_gradient_checkpointing)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare)
    placement = Placement("cuda", "4bit", "fp32", "test")
    load_base(str(tiny_model_dir), placement)
    assert moves == [] and prepared == []
    load_base(str(tiny_model_dir), placement, for_training=True)
    assert moves == [] and prepared == [False]


def _liger_installed(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec
    found = SimpleNamespace(name="liger_kernel") if installed else None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: found if name == "liger_kernel" else real(name))


@pytest.mark.parametrize(
    "liger,installed,device,expected",
    [
        ("auto", True, "cuda:0", True),
        ("auto", False, "cuda:0", False),
        (True, True, "cuda:0", True),
        (False, True, "cuda:0", False),
        ("auto", True, "cpu", False),
        (True, True, "cpu", False),  # warned and ignored
    ],
)
def test_liger_kernels_are_used_on_cuda_when_installed_or_asked_for(monkeypatch, liger, installed, device, expected):
    from qatune.config import TrainConfig
    from qatune.train import setup

    _liger_installed(monkeypatch, installed)
    assert setup._gpu_options(TrainConfig(liger=liger), device) == {"liger": expected}


def test_liger_asked_for_but_not_installed_says_what_to_install(monkeypatch):
    from qatune.config import TrainConfig
    from qatune.train import setup

    _liger_installed(monkeypatch, False)
    with pytest.raises(QatuneError, match=r"liger-kernel: pip install 'qatune\[gpu\]'"):
        setup._gpu_options(TrainConfig(liger=True), "cuda:0")


@pytest.mark.parametrize("precision,mixed", [("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "no")])
def test_precision_reaches_accelerate_as_its_mixed_precision(monkeypatch, precision, mixed):
    """fp16 on CUDA is accelerate's fp16 mode, the one with a gradient scaler; bf16 and fp32 have none."""
    import accelerate

    from qatune.train import setup

    made = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kw: made.append(kw) or kw)
    setup._accelerator(Placement("cuda:0", "4bit", precision, "test"))
    assert made == [{"cpu": False, "mixed_precision": mixed}]
    with pytest.raises(QatuneError, match="fp16 needs a CUDA GPU"):
        setup._accelerator(Placement("cpu", "none", "fp16", "test"))


class _Accelerator:
    """The parts of accelerate.Accelerator train_step uses, with a gradient norm chosen by the test."""

    def __init__(self, mixed_precision: str, grad_norm: float):
        self.mixed_precision, self.grad_norm = mixed_precision, grad_norm
        self.device, self.num_processes, self.process_index = torch.device("cpu"), 1, 0

    def no_sync(self, module):
        import contextlib

        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return self.grad_norm


def _one_step(run, mixed_precision: str, grad_norm: float) -> dict:
    from qatune.config import TrainConfig
    from qatune.rundir import RunDir
    from qatune.train.batching import Example
    from qatune.train.loop import Setup, train_step
    from qatune.train.state import TrainProgress

    weight = torch.nn.Parameter(torch.ones(()))

    class Loss(torch.nn.Module):
        def forward(self, targets, **batch):
            return weight * (targets != -100).sum(), (targets != -100).sum()

    optimizer = torch.optim.SGD([weight], lr=0.1)
    s = Setup(
        rundir=RunDir(run),
        tc=TrainConfig(),
        accelerator=_Accelerator(mixed_precision, grad_norm),
        model=None,
        loss=Loss(),
        params={"w": weight},
        train=[Example("a", [1, 2, 3], [-100, 2, 3])],
        val=[],
        val_unseen=[],
        pad_id=0,
        batch_size=1,
        prefix_len=0,
        packed=False,
        save_adapter=lambda name, extra: None,
        log=None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return train_step(s, [[0]], optimizer, scheduler, TrainProgress("x"))


def test_an_infinite_gradient_norm_is_left_to_the_fp16_scaler_and_stops_other_precisions(tmp_path):
    """fp16's scaler skips a step whose gradients overflowed (and lowers its scale); in bf16 or fp32 an
    infinite norm means the run diverged, and training stops with the error that says what to change."""
    assert _one_step(tmp_path, "fp16", float("inf"))["grad_norm"] == float("inf")
    for mixed in ("bf16", "no"):
        with pytest.raises(QatuneError, match="gradient norm became inf"):
            _one_step(tmp_path, mixed, float("inf"))
    assert _one_step(tmp_path, "bf16", 1.0)["grad_norm"] == 1.0
