"""Greedy decoding with the KV cache for a batch of left-padded prompts: finished rows leave the batch and the
cache, and the last few rows decode with n-gram lookup drafts, verified in one forward pass per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DRAFT_TOKENS = 10  # tokens proposed per lookup and row
NGRAM_SIZES = (3, 2)  # the longest match is tried first; single tokens match too often to be worth a draft
DRAFT_ROWS = 4  # drafting starts when this many rows are left: a pass then costs about the same for 1 or 11 tokens
LOOP_TOKENS = 32  # a span this long that repeats in one answer is a loop (cut_loops)
EARLY_TOKENS = 64  # a row may be ended early (stop_early) while it holds at most this many tokens
MIN_SHARED_PREFIX = 8  # tokens every prompt starts with (system prompt, role header) worth one pass of their own


def greedy_decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    stop_ids: list[int],
    *,
    lookup: bool = True,
    on_prompt: Callable[[Any, Any, Any], None] | None = None,
    budgets: list[int] | None = None,
    stop_early: Callable[[int, list[int]], bool] | None = None,
    cut_loops: bool = False,
    group: int = 0,
) -> list[list[int]]:
    """The greedy tokens of every row, each ending with its stop token when it stopped.

    `budgets`: each row's own token limit (at most `max_new_tokens`). `stop_early(row, tokens)` may end a row
    before its stop token (asked while a row holds at most EARLY_TOKENS tokens): what its answer shows is then
    decided from those tokens. `cut_loops`: a row whose last LOOP_TOKENS tokens already stand earlier in its
    answer has fallen into a loop; it ends there, without the repeat.

    The tokens every prompt starts with (the system prompt and role header) run once and their cache is
    shared by all rows; with `group` > 1, the tokens each run of `group` consecutive rows starts with (the same
    long prompt asked two ways). `on_prompt(cache, logits, mask)` sees the prompts' KV cache, the last-position logits
    and the cache's attention mask once, before decoding changes the cache (it must not change it), so other
    scoring can reuse the prompt pass.

    HF generate runs every row to the longest; here a row that stops is dropped, so a few long answers run
    on alone. A pass over so few rows is bound by reading the weights, so each row checks several drafted
    tokens per pass (prompt lookup: the text that followed its last n-gram earlier in its sequence) and keeps
    the ones greedy decoding picks: the same tokens, fewer passes (a looping answer is drafted whole)."""
    import torch
    from transformers import DynamicCache

    from qatune.models.load import cache_kwarg

    tokens: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    limits = [min(max_new_tokens, b) for b in budgets] if budgets is not None else [max_new_tokens] * len(tokens)
    alive = list(range(input_ids.shape[0]))
    spans: list[set[tuple[int, ...]]] = [set() for _ in tokens]  # each row's LOOP_TOKENS-token spans so far
    looped: set[int] = set()

    def ends(row: int) -> bool:
        mine = tokens[row]
        if len(mine) >= limits[row] or mine[-1] in stop_set:
            return True
        if cut_loops and len(mine) >= LOOP_TOKENS:
            span = tuple(mine[-LOOP_TOKENS:])
            if span in spans[row]:
                looped.add(row)
                return True
            spans[row].add(span)
        return stop_early is not None and len(mine) <= EARLY_TOKENS and stop_early(row, mine)

    stop_set = set(stop_ids)
    cache = DynamicCache()
    cache_arg = {cache_kwarg(model): cache}
    step_ids, mask = _after_shared_prefix(model, input_ids, attention_mask, cache_arg, group)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
    last = prompt_logits_index(step_ids)
    for step in range(max(limits, default=0)):
        if lookup and step > 0 and len(alive) <= DRAFT_ROWS:
            prompts = [input_ids[r][attention_mask[r].bool()].tolist() for r in alive]
            _decode_drafted(
                model, cache_arg, mask, positions[:, -1].tolist(), prompts, [(r, tokens[r]) for r in alive], ends
            )
            break
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=last if step == 0 else 1,
            **cache_arg,
        )
        if step == 0 and on_prompt is not None:
            on_prompt(cache, out.logits[:, -1], mask)
        chosen = out.logits[:, -1].float().argmax(-1)
        for row, token in zip(alive, chosen.tolist(), strict=True):
            tokens[row].append(token)
        finished = torch.tensor([ends(row) for row in alive], device=chosen.device)
        if bool(finished.all()):
            break
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(1)
            alive = [alive[i] for i in keep.tolist()]
            chosen, mask, positions = chosen[keep], mask[keep], positions[keep]
            cache.batch_select_indices(keep)
        step_ids = chosen[:, None]
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    for row in looped:
        del tokens[row][-LOOP_TOKENS:]  # the repeat
    return tokens


def _after_shared_prefix(
    model: Any, input_ids: Any, attention_mask: Any, cache_arg: dict[str, Any], group: int = 0
) -> tuple[Any, Any]:
    """Run the tokens the rows start with once, into the cache (repeated per row), and return the rest of each
    row, left-padded, with the attention mask over start and rest (padding then sits between the two). The
    start is the one every row shares, or with `group` > 1 the one each run of `group` consecutive rows shares
    (two prompts that differ only at their end). With no such start, the prompts and their mask as given."""
    import torch

    if input_ids.shape[0] < 2:
        return input_ids, attention_mask
    rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask, strict=True)]
    size = group if group > 1 else len(rows)
    if len(rows) % size:
        return input_ids, attention_mask
    starts = [_shared_start(rows[g : g + size]) for g in range(0, len(rows), size)]
    if min(starts) < MIN_SHARED_PREFIX:
        return input_ids, attention_mask
    (cache,) = cache_arg.values()
    head = max(starts)
    start_ids = input_ids.new_zeros((len(starts), head))
    start_mask = attention_mask.new_zeros((len(starts), head))
    for n, shared in enumerate(starts):
        start_ids[n, head - shared :] = torch.tensor(rows[n * size][:shared])
        start_mask[n, head - shared :] = 1
    model(
        input_ids=start_ids,
        attention_mask=start_mask,
        position_ids=(start_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **cache_arg,
    )
    cache.batch_repeat_interleave(size)
    rest_of = [row[starts[i // size] :] for i, row in enumerate(rows)]
    width = max(len(r) for r in rest_of)
    rest = input_ids.new_zeros((len(rows), width))
    mask = torch.cat([start_mask.repeat_interleave(size, dim=0), attention_mask.new_zeros((len(rows), width))], dim=1)
    for i, row in enumerate(rest_of):
        rest[i, width - len(row) :] = torch.tensor(row)
        mask[i, head + width - len(row) :] = 1
    return rest, mask


def _shared_start(rows: list[list[int]]) -> int:
    """How many tokens all `rows` start with, leaving each at least one for the prompt pass."""
    shared = min(len(r) for r in rows) - 1
    for row in rows[1:]:
        shared = next((i for i in range(shared) if row[i] != rows[0][i]), shared)
    return shared


def _decode_drafted(
    model: Any,
    cache_arg: dict[str, Any],
    mask: Any,
    positions: list[int],
    prompts: list[list[int]],
    alive: list[tuple[int, list[int]]],
    ends: Callable[[int], bool],
) -> None:
    """Extend each of a few rows (its last token chosen, not yet in the cache; `positions` holds that token's
    position) until `ends(row)` (a stop, the row's token limit or an early end), checking every row's draft in
    one pass; `alive` holds each row's number and its tokens so far. Rows keep different numbers of tokens: the
    cache columns a row rejected stay masked out, and columns no row kept are cropped. A draft is cut at the
    first token that ends its row."""
    import torch

    (cache,) = cache_arg.values()
    cached = mask[:, :-1]  # `mask` also covers the chosen tokens, which are fed next
    outs = [out for _, out in alive]
    contexts = [prompt + out for prompt, out in zip(prompts, outs, strict=True)]
    rows = list(range(len(outs)))
    while rows:
        drafts = [lookup_draft(contexts[r], DRAFT_TOKENS) for r in rows]
        width = 1 + max(len(d) for d in drafts)
        feed = [[outs[r][-1], *d] + [outs[r][-1]] * (width - 1 - len(d)) for r, d in zip(rows, drafts, strict=True)]
        start = cached.shape[1]
        full = torch.cat([cached, cached.new_ones((len(rows), width))], dim=1)
        logits = model(
            input_ids=torch.tensor(feed, device=mask.device),
            attention_mask=full,
            position_ids=torch.tensor([[positions[r] + j for j in range(width)] for r in rows], device=mask.device),
            use_cache=True,
            logits_to_keep=width,
            **cache_arg,
        ).logits
        picked = logits.float().argmax(-1).tolist()
        going = []
        for i, (r, draft) in enumerate(zip(rows, drafts, strict=True)):
            number, kept, ended = alive[r][0], 0, False
            while not ended:  # the accepted drafts (equal to the picks) and the pick after them
                outs[r].append(picked[i][kept])
                ended = ends(number)
                if kept == len(draft) or draft[kept] != picked[i][kept] or ended:
                    break
                kept += 1
            contexts[r].extend(outs[r][len(contexts[r]) - len(prompts[r]) :])
            positions[r] += kept + 1
            full[i, start + 1 + kept :] = 0
            if not ended:
                going.append(i)
        if len(going) < len(rows):
            if not going:
                return
            keep = torch.tensor(going, device=mask.device)
            cache.batch_select_indices(keep)
            full, rows = full[keep], [rows[i] for i in going]
        unused = width - 1 - int(full[:, start + 1 :].sum(1).max())  # trailing columns no row kept
        if unused:
            cache.crop(-unused)
        cached = full[:, : full.shape[1] - unused]


def prompt_logits_index(input_ids: Any) -> Any:
    """`logits_to_keep` for the prompt pass: an index tensor, not the int 1. Slicing the last position leaves a
    strided view that matmul multiplies by a per-row copy of the output layer (a 49k x 576 copy per row on the
    default model: 1.0 s instead of 0.35 s for 16 prompts); indexing gives a contiguous row per prompt."""
    import torch

    return torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)


def lookup_draft(context: list[int], limit: int) -> list[int]:
    """`limit` tokens that followed the latest earlier occurrence of the context's last n-gram, copied on past
    the end of the context as a repeat (so a loop of any period is drafted `limit` tokens ahead)."""
    if limit <= 0:
        return []
    for size in NGRAM_SIZES:
        if len(context) <= size:
            continue
        tail = context[-size:]
        for start in range(len(context) - size - 1, -1, -1):
            if context[start : start + size] == tail:
                copied = list(context)
                for offset in range(start + size, start + size + limit):
                    copied.append(copied[offset])
                return copied[len(context) :]
    return []
