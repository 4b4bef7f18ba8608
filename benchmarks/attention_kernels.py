"""Training steps of a finished run timed with each attention kernel torch has for CPU (flash, which torch picks,
and math), in turns on the same optimizer steps, and the loss and gradients of the widest batch with each kernel
against fp32 ones. qatune trains with the kernel torch picks; this measures the math kernel as a lever.

    .venv/bin/python benchmarks/attention_kernels.py --run runs/example            # 12 steps a turn, 2 rounds
    .venv/bin/python benchmarks/attention_kernels.py --run runs/example --save     # also benchmarks/results/
    .venv/bin/python benchmarks/attention_kernels.py --widths 48,96,128,160,192,256,512,1024   # no run needed

`--widths`: one forward and backward of 2,048 random tokens (rows of each width; one row left-padded by a quarter,
so the mask is explicit as in training) through the default model with the default adapters, bf16 autocast, the
fastest of three, flash and math kernel in turns.

The run's own settings and batches (its first epoch's steps after two untimed ones); the adapters move from their
initial weights as in training, the same way for every turn, so each turn starts from a fresh copy of them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

KERNELS = ("flash", "math")


def _setup(run: Path, precision: str):
    from qatune.config import load_for_run
    from qatune.rundir import RunDir
    from qatune.train.setup import setup
    from qatune.train.stage import input_hash

    config = load_for_run(run, None, {"train": {"precision": precision}}, save=False)
    return setup(RunDir(run), config, input_hash(run, config), fresh=False)[0]


def _kernel(kernel: str):
    """The context that makes torch attend with `kernel`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}[kernel])


def _reset(s) -> None:
    """The adapters back to their initial weights."""
    import torch

    with torch.no_grad():
        for name, param in s.params.items():
            param.copy_(s.initial[name])


def _steps(s, kernel: str, first: int, count: int) -> tuple[float, int]:
    """Seconds and tokens of `count` optimizer steps from step `first`, adapters reset to their initial weights."""

    from qatune.train.loop import epoch_steps, train_step
    from qatune.train.stage import _schedule
    from qatune.train.state import TrainProgress

    _reset(s)
    optimizer, scheduler = _schedule(s, 1000, decay=False)
    steps, progress = epoch_steps(s, 1), TrainProgress("benchmark")
    s.loss.train()
    with _kernel(kernel):  # the backward runs the kernel the forward chose
        for i in range(first):
            train_step(s, steps[i], optimizer, scheduler, progress)
        start, tokens = time.perf_counter(), 0
        for i in range(first, first + count):
            tokens += train_step(s, steps[i % len(steps)], optimizer, scheduler, progress)["tokens"]
    return time.perf_counter() - start, tokens


def _gradients(s, kernel: str):
    """Loss per answer token and the adapters' gradient (one vector) of the first epoch's longest micro-batch."""
    import torch

    from qatune.train.batching import collate, to_device
    from qatune.train.loop import epoch_steps

    micro = max(
        (m for step in epoch_steps(s, 1) for m in step), key=lambda m: max(len(s.train[j].input_ids) for j in m)
    )
    batch = to_device(collate([s.train[j] for j in micro], s.pad_id, s.prefix_len, s.packed), "cpu")
    _reset(s)
    s.loss.zero_grad(set_to_none=True)
    with _kernel(kernel), s.accelerator.autocast():
        loss, count = s.loss(**batch)
    loss.backward()
    return loss.item() / count.item(), torch.cat([p.grad.flatten().float() for p in s.params.values()])


def _fp32_gradients(run: Path):
    """`_gradients` of the run trained in fp32, from a process of its own (one precision per process)."""
    import subprocess
    import sys
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fp32.pt"
        cmd = [sys.executable, __file__, "--run", str(run), "--precision", "fp32", "--gradients-to", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return torch.load(out)


def widths(values: list[int], tokens: int = 2048) -> list[dict]:
    """Seconds of a forward and backward over `tokens` tokens in rows of each width, with each kernel."""
    import torch

    from qatune.config import TrainConfig
    from qatune.models.load import load_base
    from qatune.models.lora import attach_lora, lora_config
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model

    tc = TrainConfig()
    placement = choose_placement("none", "bf16", cpu_bf16=True)
    base = load_base(resolve_model("default"), placement, for_training=True, attn_implementation="sdpa")
    model = attach_lora(base, lora_config(tc.lora_r, tc.lora_alpha, tc.lora_dropout, tc.target_modules))
    decoder = model.get_base_model().get_decoder()
    model.train()
    rows = []
    for width in values:
        ids = torch.randint(100, 20000, (max(1, tokens // width), width))
        mask = torch.ones_like(ids)
        mask[0, : width // 4] = 0
        best = {}
        for kernel in KERNELS * 2:
            for _ in range(3):
                start = time.perf_counter()
                with _kernel(kernel), torch.autocast("cpu", dtype=torch.bfloat16):
                    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                hidden.float().pow(2).mean().backward()
                seconds = time.perf_counter() - start
                best[kernel] = min(best.get(kernel, seconds), seconds)
        flash, math = best["flash"], best["math"]
        rows.append({"width": width, "rows": ids.shape[0], "flash_s": flash, "math_s": math})
        shown = f"flash {flash:.2f} s, math {math:.2f} s: math {flash / math:.2f}x"
        print(f"width {width:5d} x {ids.shape[0]:3d} rows: {shown}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run directory that `qatune run` or `train` finished")
    ap.add_argument("--widths", help="comma-separated row widths for the synthetic comparison instead of a run")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=12, help="timed optimizer steps per turn")
    ap.add_argument("--rounds", type=int, default=2, help="turns per kernel, alternating")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/attention_kernels.json")
    ap.add_argument("--gradients-to", type=Path, help=argparse.SUPPRESS)  # the fp32 reference, from a subprocess
    args = ap.parse_args()

    import torch

    if args.widths:
        found = widths([int(w) for w in args.widths.split(",")])
        if args.save:
            _save("attention_widths.json", {"torch": torch.__version__, "widths": found})
        return
    if args.run is None:
        ap.error("give --run RUN or --widths W,W,...")
    s = _setup(args.run, args.precision)
    if args.gradients_to:
        torch.save(_gradients(s, "math"), args.gradients_to)
        return
    rates: dict[str, list[float]] = {k: [] for k in KERNELS}
    for _ in range(args.rounds):
        for kernel in KERNELS:
            seconds, tokens = _steps(s, kernel, 2, args.steps)
            rates[kernel].append(tokens / seconds)
            print(f"{kernel:6s} {args.steps} steps {seconds:6.1f} s  {tokens / seconds:6.0f} tokens/s", flush=True)
    ref_loss, ref_grad = _fp32_gradients(args.run)
    closeness = {}
    for kernel in KERNELS:
        loss, grad = _gradients(s, kernel)
        closeness[kernel] = {
            "loss": loss,
            "loss_vs_fp32": abs(loss - ref_loss) / abs(ref_loss),
            "gradient_vs_fp32": float((grad - ref_grad).norm() / ref_grad.norm()),
        }
        off = closeness[kernel]["gradient_vs_fp32"]
        print(f"{kernel:5s} loss {loss:.4f} (fp32 {ref_loss:.4f}); gradient off fp32's by {off:.3f} (relative norm)")
    best = {k: max(v) for k, v in rates.items()}
    print(f"math against flash: {best['math'] / best['flash']:.2f}x (best turn of each; torch {torch.__version__})")
    if args.save:
        _save(
            "attention_kernels.json",
            {
                "run": str(args.run),
                "precision": args.precision,
                "tokens_per_s": rates,
                "closeness": closeness,
                "torch": torch.__version__,
            },
        )


def _save(name: str, found: dict) -> None:
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
