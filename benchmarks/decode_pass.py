"""Cost of one decoding pass on CPU: 1 and 16 rows over ~120 cached tokens, for the default model's base weights
in fp32, with an all-linear r 32 PEFT adapter, with that adapter merged into the weights, and in bf16.

    .venv/bin/python benchmarks/decode_pass.py
"""

from __future__ import annotations

import time

import torch

from qatune.models.load import load_base
from qatune.models.lora import attach_lora, lora_config
from qatune.models.placement import choose_placement
from qatune.models.resolve import resolve_model

CACHED, PASSES, WARMUP = 120, 30, 3


def ms_per_pass(model, rows: int) -> float:
    ids = torch.randint(100, 20000, (rows, CACHED))
    step = torch.randint(100, 20000, (rows, 1))
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        for _ in range(WARMUP):
            model(input_ids=step, past_key_values=cache, use_cache=True)
        start = time.perf_counter()
        for _ in range(PASSES):
            model(input_ids=step, past_key_values=cache, use_cache=True)
    return (time.perf_counter() - start) / PASSES * 1000


def main() -> None:
    torch.manual_seed(0)
    path = resolve_model("default")
    fp32 = choose_placement("none", "fp32")
    variants = {}
    base = load_base(path, fp32)
    variants["fp32 base weights"] = lambda r: ms_per_pass(base, r)
    peft = attach_lora(load_base(path, fp32), lora_config(32, 32, 0.0, ["all-linear"]))
    variants["fp32 + PEFT LoRA all-linear r 32"] = lambda r: ms_per_pass(peft, r)
    merged = attach_lora(load_base(path, fp32), lora_config(32, 32, 0.0, ["all-linear"]))
    merged.merge_adapter()
    variants["fp32, that adapter merged"] = lambda r: ms_per_pass(merged.get_base_model(), r)
    bf16 = load_base(path, fp32).to(torch.bfloat16)
    variants["bf16 base weights"] = lambda r: ms_per_pass(bf16, r)
    print(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    for label, run in variants.items():
        print(f"{label:34s} 1 row {run(1):6.1f} ms/pass   16 rows {run(16):6.1f} ms/pass", flush=True)


if __name__ == "__main__":
    main()
