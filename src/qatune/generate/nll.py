"""Teacher-forced answer NLL: the decoder and output layer split so the vocabulary projection runs only where a
reference token is predicted, replies scored after a cached prompt, and length-sorted token batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qatune.prompts import IGNORE_INDEX, encode_reply

REPLY_TOKENS = 4096  # reply tokens scored together after a cached prompt, padding included


def decoder_and_head(model: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The decoder stack and a function from its hidden states to fp32 vocabulary logits (with the model's
    final logit soft-capping), so scoring can run the output layer only where a token is predicted."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)

    def vocab_logits(hidden: Any) -> Any:
        logits = head(hidden).float()
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    return base.get_decoder(), vocab_logits


def reply_ids(
    tokenizer: Any, conversations: list[list[dict]], replies: list[str], max_length: int = 1024
) -> list[list[int]]:
    """The tokens of each reply after its conversation (answer and end-of-turn token), as `answer_nll` scores
    them; empty where the prompt alone exceeds `max_length` (no value)."""
    out = []
    for conv, reply in zip(conversations, replies, strict=True):
        e = encode_reply(tokenizer, conv, reply, max_length)
        out.append([t for t, label in zip(e.input_ids, e.labels, strict=True) if label != IGNORE_INDEX] if e else [])
    return out


def score_replies(
    out: list, model: Any, replies: list[list[int]], pad_id: int, cache: Any, logits: Any, mask: Any
) -> None:
    out.extend(reply_nll(model, cache, logits, mask, replies, pad_id))


def reply_nll(
    model: Any, cache: Any, last_logits: Any, mask: Any, replies: list[list[int]], pad_id: int
) -> list[float | None]:
    """Mean NLL per reply token, each row's prompt already in `cache` (left-padded, `mask`) with `last_logits`
    predicting the reply's first token; the cache is not changed. As in `answer_nll`, the output layer runs only
    where a reply token is predicted, and replies go through in length order, at most REPLY_TOKENS reply tokens
    (padding included) at a time: one batch padded to the longest reply would cost several times the tokens when
    reply lengths vary (long answers)."""
    import torch

    values: list[float | None] = [None] * len(replies)
    todo = sorted((i for i, r in enumerate(replies) if r), key=lambda i: len(replies[i]))
    for idx in token_batches(todo, [len(r) for r in replies], REPLY_TOKENS):
        rows = torch.tensor(idx, device=mask.device)
        scored = _nll_rows(
            model, _cache_rows(cache, rows), last_logits[rows], mask[rows], [replies[i] for i in idx], pad_id
        )
        for i, value in zip(idx, scored, strict=True):
            values[i] = value
    return values


def _cache_rows(cache: Any, rows: Any) -> Any:
    """A cache holding only `rows` of `cache`, which stays as it was (selecting builds new tensors)."""
    import copy

    part = copy.copy(cache)
    part.layers = [copy.copy(layer) for layer in cache.layers]
    part.batch_select_indices(rows)
    return part


def _nll_rows(
    model: Any, cache: Any, last_logits: Any, mask: Any, replies: list[list[int]], pad_id: int
) -> list[float]:
    """Mean NLL of each (non-empty) reply after its row of `cache`, in one batch; `cache` is extended."""
    import torch

    from qatune.models.load import cache_kwarg

    decoder, vocab_logits = decoder_and_head(model)
    width = max(len(r) for r in replies)
    ids = torch.full((len(replies), width), pad_id, dtype=torch.long, device=mask.device)
    reply_mask = torch.zeros_like(ids)
    for row, reply in enumerate(replies):
        ids[row, : len(reply)] = torch.tensor(reply, device=mask.device)
        reply_mask[row, : len(reply)] = 1
    sums = torch.nn.functional.cross_entropy(last_logits.float(), ids[:, 0], reduction="none")
    if width > 1:
        positions = mask.sum(-1, keepdim=True) + torch.arange(width - 1, device=mask.device)
        hidden = decoder(
            input_ids=ids[:, :-1],
            attention_mask=torch.cat([mask, reply_mask[:, :-1]], dim=1),
            position_ids=positions,
            use_cache=True,
            **{cache_kwarg(decoder): cache},
        ).last_hidden_state
        keep = reply_mask[:, 1:].bool()
        loss = torch.nn.functional.cross_entropy(vocab_logits(hidden[keep]), ids[:, 1:][keep], reduction="none")
        sums = sums.index_add(0, keep.nonzero()[:, 0], loss)
    return [float(sums[row] / len(reply)) for row, reply in enumerate(replies)]


def token_batches(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive runs of `order` whose padded size (rows x longest) stays within `budget` tokens."""
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * max(lengths[i], *(lengths[j] for j in batches[-1])) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
