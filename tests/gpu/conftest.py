"""GPU tests run only where CUDA is (`pytest -m gpu` on a GPU machine); elsewhere they are collected and skipped
with the reason. QLoRA also needs the GPU extras (bitsandbytes)."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        reason = "needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)"
    elif importlib.util.find_spec("bitsandbytes") is None:
        reason = "needs bitsandbytes: .venv/bin/pip install -c constraints.txt -e '.[gpu]'"
    else:
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))
