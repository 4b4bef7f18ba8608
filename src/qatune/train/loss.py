"""Answer-only causal-LM loss: the decoder runs once over a shared prompt prefix, the output layer is
applied only at positions that predict an answer token, and the summed cross-entropy is returned."""

from __future__ import annotations

from typing import Any

import torch

from qatune.models.load import cache_kwarg
from qatune.prompts import IGNORE_INDEX


class AnswerLoss(torch.nn.Module):
    """Wraps the LoRA model so one forward call per micro-batch returns (loss sum, target count).

    Keeping the whole loss inside one module call lets DDP see a single forward per step. The vocabulary
    projection dominates small models, so it only runs where a label exists (about a quarter of tokens)."""

    def __init__(self, model: Any, fused_ce: bool = False):
        super().__init__()
        self.model = model
        self.fused_ce = fused_ce
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.softcap = getattr(base.config, "final_logit_softcapping", None)

    def _parts(self) -> tuple[Any, Any]:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.get_decoder(), base.get_output_embeddings()

    def forward(self, input_ids, position_ids, attention_mask, targets, prefix_ids=None):
        decoder, head = self._parts()
        cache = None
        if prefix_ids is not None:
            out = decoder(input_ids=prefix_ids, use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            cache.batch_repeat_interleave(input_ids.shape[0])
        kwargs = {cache_kwarg(decoder): cache} if cache is not None else {}
        hidden = decoder(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=cache is not None,
            **kwargs,
        ).last_hidden_state
        keep = targets != IGNORE_INDEX
        chosen, wanted = hidden[keep], targets[keep]
        if self.fused_ce and self.softcap is None and chosen.dtype == head.weight.dtype:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")(head.weight, chosen, wanted)
            return loss, keep.sum()
        logits = head(chosen).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        loss = torch.nn.functional.cross_entropy(logits, wanted, reduction="sum")
        return loss, keep.sum()


def full_logits_loss(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the plain forward with logits at every position, for tests that the fast path is equal."""
    ids, pos, mask, tgt = batch["input_ids"], batch["position_ids"], batch["attention_mask"], batch["targets"]
    if batch.get("prefix_ids") is not None:
        prefix = batch["prefix_ids"].expand(ids.shape[0], -1)
        ids = torch.cat([prefix, ids], dim=1)
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], -1)
        tgt = torch.cat([torch.full_like(prefix, IGNORE_INDEX), tgt], dim=1)
    logits = model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).logits.float()
    keep = tgt != IGNORE_INDEX
    loss = torch.nn.functional.cross_entropy(logits[keep], tgt[keep], reduction="sum")
    return loss, keep.sum()
