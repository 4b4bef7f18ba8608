"""QLoRA on a CUDA GPU with the GPU tests' model (conftest.py: built here from a config, or the real default
model) and 20 pairs of the example syllabus: training on the 4-bit base (loss finite and falling, every LoRA tensor
trained), evaluation on the 4-bit base, and a merged export of that run, whose weights come from the unquantized
base plus the adapter. Run with `pytest -m gpu`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from example_runs import example_pairs, reworded_questions

pytestmark = pytest.mark.gpu
TOKENS = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory, gpu_model) -> Path:
    from qatune.config import load_for_run
    from qatune.storage import write_jsonl

    pairs = example_pairs(24)
    run = tmp_path_factory.mktemp("qlora") / "run"
    write_jsonl(run / "data" / "train.jsonl", pairs[:20])
    write_jsonl(run / "data" / "val.jsonl", pairs[20:])
    write_jsonl(run / "data" / "test.jsonl", reworded_questions(pairs[:20], 8))
    overrides = {"model": gpu_model, "train": {"epochs": [1, 3], "warmup_steps": 2}, "eval": {"max_new_tokens": TOKENS}}
    load_for_run(run, None, overrides)  # RUN/config.yaml: quant and precision stay auto (4-bit, bf16 on CUDA)
    return run


@pytest.fixture(scope="module")
def trained(run) -> dict:
    from qatune.config import load_for_run
    from qatune.train import train

    return train(run, load_for_run(run, None, {}, save=False)).to_json()


def test_qlora_trains_on_a_4bit_base(gpu, run, trained):
    from safetensors.torch import load_file

    from qatune.rundir import RunDir
    from qatune.storage import read_jsonl

    assert trained["quantization"] == gpu.quant and trained["device"].startswith(gpu.device)
    if gpu.cuda:
        assert trained["precision"] in ("bf16", "fp16")
    losses = [r["loss"] for r in read_jsonl(RunDir(run).metrics_jsonl) if "loss" in r]
    assert all(loss == loss and loss < float("inf") for loss in losses)
    third = max(1, len(losses) // 3)
    assert sum(losses[-third:]) / third < sum(losses[:third]) / third, "the loss must fall"
    adapter = load_file(str(RunDir(run).model_dir("epoch-3") / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert lora_b and all(bool(v.abs().sum() > 0) for v in lora_b.values()), "every lora_B starts at zero"


def test_base_is_loaded_in_4bit_for_training_and_eval(gpu, run, trained):
    if gpu.quant != "4bit":
        pytest.skip("4-bit layers need CUDA")
    import bitsandbytes as bnb

    from qatune.config import load_for_run
    from qatune.generate import load_engine

    engine = load_engine(run, load_for_run(run, None, {}, save=False))
    assert engine.device.startswith(gpu.device)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in engine.model.modules())


def test_eval_on_the_4bit_base_scores_every_model(run, trained):
    from qatune.config import load_for_run
    from qatune.evaluate.answer import evaluate
    from qatune.rundir import RunDir
    from qatune.storage import read_jsonl

    scores = evaluate(run, load_for_run(run, None, {}, save=False))
    assert {"base", "retrieval", "epoch-1", "epoch-3", "best"} <= set(scores["models"])
    rows = read_jsonl(RunDir(run).eval_generations("test"))
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    for name in ("base", "epoch-1", "epoch-3"):
        assert len(by_model[name]) == scores["n"] == 8
        assert all(r["answer"].strip() and 0 < r["new_tokens"] <= TOKENS for r in by_model[name]), name
    assert [r["answer"] for r in by_model["epoch-3"]] != [r["answer"] for r in by_model["base"]]
    # three epochs on these facts make their reference answers more likely than the untuned base does
    nll = {m: sum(r["metrics"]["answer_nll"] for r in by_model[m]) for m in ("base", "epoch-3")}
    assert nll["epoch-3"] < nll["base"]


def test_export_of_a_4bit_run_merges_into_the_unquantized_base(run, trained, tmp_path):
    """The merged weights equal base + adapter computed from the full-precision base (never the 4-bit one): the
    folder's logits match peft's unmerged model in fp32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qatune.config import load_for_run
    from qatune.export import export
    from qatune.models.load import load_base
    from qatune.models.lora import load_adapters
    from qatune.models.placement import Placement
    from qatune.models.resolve import resolve_model
    from qatune.rundir import RunDir

    out = export(run, "epoch-3", tmp_path / "merged", dtype="fp32")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)

    base_path = resolve_model(load_for_run(run, None, {}, save=False).model)
    base = load_base(base_path, Placement("cpu", "none", "fp32", "reference"))
    unmerged = load_adapters(base, {"epoch-3": RunDir(run).model_dir("epoch-3")})
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who teaches DSC 310?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.inference_mode():
        expected = unmerged(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with unmerged.disable_adapter():
            plain = unmerged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3), "the adapter must be in the merged weights"
