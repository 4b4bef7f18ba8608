"""A gauge of the machine's speed at the moment: one forward and backward pass of 13 rows x 75 tokens (a training
micro-batch of the example run) through the default model in fp32 with the default adapters (all-linear LoRA,
r 32). A shared machine changes speed from hour to hour; quote this next to a run time measured then.

    .venv/bin/python benchmarks/train_pass.py
"""

from __future__ import annotations

import time

import torch

from qatune.models.load import load_base
from qatune.models.lora import attach_lora, lora_config
from qatune.models.placement import choose_placement
from qatune.models.resolve import resolve_model

ROWS, TOKENS, REPEATS = 13, 75, 4


def seconds_per_pass(model, rows: int = ROWS, tokens: int = TOKENS, repeats: int = REPEATS) -> float:
    """The fastest of `repeats` timed passes, after one untimed pass."""
    ids = torch.randint(100, 20000, (rows, tokens))
    decoder = model.get_base_model().get_decoder()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        decoder(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    torch.manual_seed(0)
    fp32 = choose_placement("none", "fp32")
    model = attach_lora(load_base(resolve_model("default"), fp32), lora_config(32, 32, 0.0, ["all-linear"]))
    model.train()
    print(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    print(f"forward+backward {ROWS} x {TOKENS} tokens, fp32, LoRA all-linear r 32: {seconds_per_pass(model):.3f} s")


if __name__ == "__main__":
    main()
