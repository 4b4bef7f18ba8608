"""CPU training levers one at a time, with qatune's own building blocks (qatune.train.batching collation,
qatune.train.loss.AnswerLoss / full_logits_loss) on the default model: a ladder from the seed's batches to qatune's,
each rung changing one thing, timed over the same examples in one process. Rungs that must not change the
loss (answer-only logits, shared prefix, packing) are checked against their reference.

    .venv/bin/python benchmarks/cpu_levers.py            # default model, 24 examples per rung
    .venv/bin/python benchmarks/cpu_levers.py --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
import workload  # noqa: E402


def _examples(tokenizer, pairs):
    from qatune.prompts import encode_pair
    from qatune.train.batching import Example

    return [
        Example(str(i), e.input_ids, e.labels)
        for i, (q, a) in enumerate(pairs)
        if (e := encode_pair(tokenizer, q, a, 512)) is not None
    ]


def _seed_batches(tokenizer, pairs, bs: int, dynamic: bool):
    """The seed's [INST] text, labels on every non-pad token; padded to 256 or to the longest in the batch."""
    from seed_recipe import SEED_PROMPT

    texts = [SEED_PROMPT.format(q=q, a=a) for q, a in pairs]
    out = []
    for i in range(0, len(texts), bs):
        enc = tokenizer(
            texts[i : i + bs],
            padding="longest" if dynamic else "max_length",
            max_length=256,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100) if dynamic else ids.clone()  # the seed: pads labelled too
        out.append(({"input_ids": ids, "attention_mask": mask, "labels": labels}, len(texts[i : i + bs])))
    return out


def _qatune_batches(examples, bs: int, pad_id: int, prefix: int, packed: bool):
    from qatune.train.batching import collate

    return [
        (collate(examples[i : i + bs], pad_id, prefix, packed), len(examples[i : i + bs]))
        for i in range(0, len(examples), bs)
    ]


def _time(model, loss_fn, batches, bf16: bool = False) -> tuple[float, float]:
    """examples/s over `batches` (first one untimed, as warm-up), and the summed loss of the first batch."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)  # lr 0: every rung sees the same weights
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    first = None
    n, start = 0, 0.0
    for k, (batch, count) in enumerate([batches[0], *batches]):
        if k == 1:
            start, n = time.perf_counter(), 0
        with ctx:
            loss = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += count
        first = loss.item() if first is None else first
    return n / (time.perf_counter() - start), first


def rungs(model, tokenizer, pairs, bs: int) -> list[tuple[str, float, float | None, str]]:
    import torch

    from qatune.train.batching import shared_prefix_len
    from qatune.train.loss import AnswerLoss, full_logits_loss

    examples = _examples(tokenizer, pairs)
    pad = tokenizer.pad_token_id
    answer = AnswerLoss(model)
    hf = lambda b: model(**b).loss  # noqa: E731
    full = lambda b: full_logits_loss(model, b)[0]  # noqa: E731
    fast = lambda b: answer(**b)[0]  # noqa: E731
    prefix = shared_prefix_len(examples)
    seed2 = _seed_batches(tokenizer, pairs, 2, False)
    plan = [
        ("seed batches: pad 256, all labels, batch 2, grad checkpointing", "gc", hf, seed2),
        ("same, no gradient checkpointing", "", hf, seed2),
        ("+ pad to longest in batch (labels still on prompt)", "", hf, _seed_batches(tokenizer, pairs, 2, True)),
        (f"+ batch {bs}", "", hf, _seed_batches(tokenizer, pairs, bs, True)),
        (
            f"qatune chat template, answer-only labels, full logits, batch {bs}",
            "",
            full,
            _qatune_batches(examples, bs, pad, 0, False),
        ),
        ("+ logits only at answer positions (AnswerLoss)", "", fast, _qatune_batches(examples, bs, pad, 0, False)),
        (
            f"+ shared prompt prefix computed once ({prefix} tokens)",
            "",
            fast,
            _qatune_batches(examples, bs, pad, prefix, False),
        ),
        ("  packed rows instead of padding (no prefix)", "", fast, _qatune_batches(examples, bs, pad, 0, True)),
        ("  bf16 autocast", "bf16", fast, _qatune_batches(examples, bs, pad, prefix, False)),
        ("  1 thread", "1t", fast, _qatune_batches(examples, bs, pad, prefix, False)),
    ]
    results = []
    threads = torch.get_num_threads()
    for label, flag, fn, batches in plan:
        if flag == "gc":
            model.get_base_model().gradient_checkpointing_enable()
        if flag == "1t":
            torch.set_num_threads(1)
        model.train()
        rate, loss = _time(model, fn, batches, bf16=flag == "bf16")
        torch.set_num_threads(threads)
        if flag == "gc":
            model.get_base_model().gradient_checkpointing_disable()
        results.append((label, rate, loss, flag))
        print(f"{label:<70} {rate:7.2f} ex/s  first-batch loss {loss:.4f}", flush=True)
    reference = results[4][2]  # full logits over the same qatune batches: the loss the fast rungs must equal
    for label, _, loss, _ in results[5:8]:
        print(f"loss check: {label.strip()}: {abs(loss - reference) / abs(reference):.2e} relative difference")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=6, help="what train.batch_size auto picks for 48 pairs")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--wait", type=float, default=0)
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    import torch

    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import attach_lora, lora_config
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model

    path = (
        str(record.tiny_model(Path(tempfile.gettempdir()) / "qatune-bench-tiny"))
        if args.tiny
        else resolve_model("default")
    )
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    base = load_base(path, choose_placement("none", "fp32", device="cpu"), for_training=True)
    base.enable_input_require_grads()  # gradient checkpointing rung needs grads flowing into the checkpoint
    model = attach_lora(base, lora_config(8, 16, 0.0, ["q_proj", "v_proj"]))
    pairs, _ = workload.training_pairs(min(args.examples, 8) if args.tiny else args.examples)
    if args.wait:
        record.wait_for_quiet(args.max_load, args.wait)
    load = os.getloadavg()[0]
    print(f"{len(pairs)} examples per rung, model {path}, load average {load:.2f}")
    results = rungs(model, tokenizer, pairs, args.batch_size)
    if args.save:
        record.save(
            "cpu_levers",
            {
                "command": " ".join(sys.argv),
                "tiny": args.tiny,
                "load_before": load,
                "rows": [{"rung": r[0], "examples_per_s": r[1], "first_batch_loss": r[2]} for r in results],
            },
        )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
