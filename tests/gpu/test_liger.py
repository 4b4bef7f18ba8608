"""Liger's fused linear cross-entropy against plain cross-entropy on the same batch: qatune's AnswerLoss on the
4-bit base with Liger's kernels applied as training applies them (train.setup.load_model), once through the fused
kernel and once through the output layer and torch's cross-entropy. The fused kernel must really run (it is
skipped silently when the hidden states and the output layer differ in dtype) and give the same loss and LoRA
gradients to bf16 accuracy."""

from __future__ import annotations

import pytest

from example_runs import example_pairs

pytestmark = pytest.mark.gpu


def test_fused_loss_equals_plain_cross_entropy_on_the_same_batch(gpu, gpu_model, monkeypatch):
    if not gpu.cuda:
        pytest.skip("Liger's kernels need CUDA")
    liger = pytest.importorskip("liger_kernel.transformers", reason="needs liger-kernel (pip install 'qatune[gpu]')")
    import torch

    from qatune.config import load
    from qatune.models.load import load_tokenizer
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model
    from qatune.prompts import encode_pair
    from qatune.train.batching import Example, collate, to_device
    from qatune.train.loss import AnswerLoss
    from qatune.train.setup import load_model

    config = load(None, {"model": gpu_model, "train": {"lora_dropout": 0.0, "liger": True}})
    path = resolve_model(config.model)
    placement = choose_placement(config.train.quant, config.train.precision)
    assert placement.quant == gpu.quant
    model = load_model(config, path, placement, {"liger": True})
    model.eval()  # no dropout anywhere: both passes see the same network
    tokenizer = load_tokenizer(path)
    encoded = [encode_pair(tokenizer, p["question"], p["answer"], 256) for p in example_pairs(8)]
    examples = [Example(str(i), e.input_ids, e.labels) for i, e in enumerate(encoded) if e is not None]
    batch = to_device(collate(examples, tokenizer.pad_token_id), placement.device)

    fused_calls = []
    real_forward = liger.LigerFusedLinearCrossEntropyLoss.forward

    def counting_forward(self, *args, **kwargs):
        fused_calls.append(1)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(liger.LigerFusedLinearCrossEntropyLoss, "forward", counting_forward)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def loss_and_grads(fused: bool) -> tuple[float, int, dict]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=placement.dtype):
            loss, count = AnswerLoss(model, fused_ce=fused)(**batch)
        loss.backward()
        return loss.item(), int(count), {n: p.grad.detach().float().clone() for n, p in trainable.items()}

    fused_loss, fused_count, fused_grads = loss_and_grads(True)
    assert fused_calls == [1], "the fused kernel did not run (hidden states and output layer differ in dtype?)"
    plain_loss, plain_count, plain_grads = loss_and_grads(False)
    assert fused_calls == [1]

    assert fused_count == plain_count > 0
    assert fused_loss == pytest.approx(plain_loss, rel=1e-2)
    flat_fused = torch.cat([g.flatten() for g in fused_grads.values()])
    flat_plain = torch.cat([g.flatten() for g in plain_grads.values()])
    assert flat_plain.norm() > 0
    difference = ((flat_fused - flat_plain).norm() / flat_plain.norm()).item()
    assert difference < 5e-2, f"LoRA gradients differ by {difference:.3%}"
