"""Continuous batching for serving: rows (one request each, any adapter, greedy or sampled) join a running
batch at a step boundary after one prompt pass for all newcomers, then gain one token per step together and
leave when they stop, reach their limit or are cancelled. All rows share one KV cache whose columns are
right-aligned: each row's tokens end at the last column, the padding in front of them is masked out, and
positions are counted per row, so a row decodes as it would alone. The start every chat prompt shares
(system prompt, role header) is computed once per adapter and copied into each newcomer's cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PEFT_BASE = "__base__"  # peft's name for the rows of a mixed-adapter batch that use no adapter


@dataclass(eq=False)
class Row:
    adapter: str  # an adapter of the engine, or "base"
    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # sampling: the same seed gives the same answer, whatever else is in the batch
    tokens: list[int] = field(default_factory=list)
    stopped: bool = False  # the last token is a stop token
    generator: Any = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.stopped or len(self.tokens) >= self.max_new_tokens


def mixed_adapters(model: Any) -> bool:
    """Whether rows of different adapters can share a pass (peft's `adapter_names`): LoRA adapters without
    DoRA, none merged into the weights. Otherwise a batch holds one adapter at a time."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return False
    lora = all(getattr(c, "peft_type", None) == "LORA" and not getattr(c, "use_dora", False) for c in configs.values())
    return lora and not any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "lora_A"))


class DecodeBatch:
    """The rows decoding together on one engine. `add` runs the newcomers' prompts and gives each its first
    token; `step` gives every row its next token; `remove` takes rows out (finished or cancelled)."""

    def __init__(self, engine: Any, share_start: bool = True):
        self.engine = engine
        self.mixed = bool(engine.adapters) and mixed_adapters(engine.model)
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: Any = None  # rows x cache columns, 1 where the column holds one of the row's tokens
        self._start = _template_start(engine) if share_start else []
        self._start_kv: dict[str, list[tuple[Any, Any]]] = {}  # adapter -> the start's keys and values per layer

    @property
    def columns(self) -> int:
        """The KV cache's length: the longest row (prompt and answer so far) plus the left padding of the rest."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    def accepts(self, adapter: str, others: list[str]) -> bool:
        """Whether a row of `adapter` may join this batch along with newcomers of the `others` adapters."""
        return self.mixed or all(a == adapter for a in [*(r.adapter for r in self.rows), *others])

    def add(self, rows: list[Row]) -> None:
        """Prompt passes for the newcomers; rows not done after their first token join. Prompts that open with
        the shared start run only the rest of their tokens; the padding then sits between start and rest."""
        skip = len(self._start)
        shared = [r for r in rows if skip and len(r.prompt) > skip and r.prompt[:skip] == self._start]
        for group, first in ((shared, skip), ([r for r in rows if r not in shared], 0)):
            if group:
                self._prompt_pass(group, first)

    def _prompt_pass(self, rows: list[Row], skip: int) -> None:
        import torch
        from transformers import DynamicCache

        from qatune.generate.decoding import prompt_logits_index

        width = max(len(r.prompt) - skip for r in rows)
        ids = torch.full((len(rows), width), self.engine.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt) + skip :] = torch.tensor(row.prompt[skip:])
            mask[i, width - len(row.prompt) + skip :] = 1
            row.generator = _generator(row) if row.temperature > 0 else None
        ids, mask = ids.to(self.engine.device), mask.to(self.engine.device)
        positions = skip + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(ddp_cache_data=self._starts(rows)) if skip else DynamicCache()
        mask = torch.cat([mask.new_ones((len(rows), skip)), mask], dim=1)
        self._append(rows, self._forward(rows, cache, ids, mask, positions, prompt_logits_index(ids)))
        going = [i for i, row in enumerate(rows) if not row.done]
        if going:
            keep = torch.tensor(going, device=mask.device)
            if len(going) < len(rows):
                cache.batch_select_indices(keep)
            self._join(cache, mask[keep], [rows[i] for i in going])

    def _starts(self, rows: list[Row]) -> list[tuple[Any, Any]]:
        """The shared start's keys and values for each row's adapter, stacked per layer (one pass per adapter,
        the first time it is needed)."""
        import torch
        from transformers import DynamicCache

        for adapter in {r.adapter for r in rows} - set(self._start_kv):
            cache, ids = DynamicCache(), torch.tensor([self._start], device=self.engine.device)
            probe = [Row(adapter, self._start, 1)]
            self._forward(
                probe, cache, ids, torch.ones_like(ids), torch.arange(ids.shape[1], device=ids.device)[None], 1
            )
            layers: list[Any] = list(cache.layers)
            self._start_kv[adapter] = [(layer.keys, layer.values) for layer in layers]
        per_row = [self._start_kv[r.adapter] for r in rows]
        return [
            (torch.cat([kv[i][0] for kv in per_row]), torch.cat([kv[i][1] for kv in per_row]))
            for i in range(len(per_row[0]))
        ]

    def step(self) -> None:
        """Feed every row its last token and append the next one."""
        import torch

        if not self.rows:
            return
        device = self._mask.device
        ids = torch.tensor([[r.tokens[-1]] for r in self.rows], device=device)
        positions = torch.tensor([[len(r.prompt) + len(r.tokens) - 1] for r in self.rows], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
        self._append(self.rows, self._forward(self.rows, self._cache, ids, self._mask, positions, logits_to_keep=1))

    def remove(self, rows: list[Row]) -> None:
        """Take rows out; cache columns no remaining row uses are dropped from the left."""
        import torch

        keep = [i for i, r in enumerate(self.rows) if r not in rows]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._cache.batch_select_indices(index)
        self.rows, self._mask = [self.rows[i] for i in keep], self._mask[index]
        unused = int(self._mask.any(0).long().argmax())  # leading columns that are padding in every row
        if unused:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]
            self._mask = self._mask[:, unused:]

    def _join(self, cache: Any, mask: Any, rows: list[Row]) -> None:
        """Newcomers' cache and mask below the running rows', both left-padded to the wider of the two."""
        import torch

        if not self.rows:
            self._cache, self._mask, self.rows = cache, mask, rows
            return
        width = max(mask.shape[1], self._mask.shape[1])
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)])
            mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)])
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.rows = self.rows + rows

    def _forward(self, rows: list[Row], cache: Any, ids: Any, mask: Any, positions: Any, logits_to_keep: Any) -> Any:
        import torch

        from qatune.models.load import cache_kwarg

        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
        with self._adapters(rows) as (model, extra), torch.inference_mode():
            out = model(**inputs, logits_to_keep=logits_to_keep, **{cache_kwarg(model): cache}, **extra)
        return out.logits[:, -1]

    @contextmanager
    def _adapters(self, rows: list[Row]) -> Iterator[tuple[Any, dict]]:
        """The model with each row's adapter: per row in a mixed batch, else the one adapter all rows use."""
        if self.mixed:
            names = [PEFT_BASE if r.adapter == "base" else r.adapter for r in rows]
            with self.engine.lock:
                yield self.engine.model, {"adapter_names": names}
        else:
            with self.engine.use(rows[0].adapter) as model:
                yield model, {}

    def _append(self, rows: list[Row], logits: Any) -> None:
        stops = set(self.engine.stop_ids)
        for row, token in zip(rows, _choose(logits, rows), strict=True):
            row.tokens.append(token)
            row.stopped = token in stops


def _template_start(engine: Any) -> list[int]:
    """The tokens every single-question chat prompt opens with (system prompt, role header), where there are
    enough to be worth a pass of their own. Not used with sliding-window attention, whose window would count
    the padding between start and rest."""
    from qatune.generate.decoding import MIN_SHARED_PREFIX
    from qatune.prompts import messages_for, prompt_ids

    config = getattr(engine.model, "config", None)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return []
    a, b = (prompt_ids(engine.tokenizer, messages_for(q)) for q in ("a", "Z9?"))
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:shared] if shared >= MIN_SHARED_PREFIX else []


def _pad_left(tensor: Any, width: int, dim: int = -2) -> Any:
    import torch

    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _generator(row: Row) -> Any:
    import torch

    generator = torch.Generator()
    if row.seed is None:
        generator.seed()
    else:
        generator.manual_seed(row.seed)
    return generator


def _choose(logits: Any, rows: list[Row]) -> list[int]:
    """Greedy rows take the most likely token; sampled rows draw with their temperature and top-p (nucleus:
    the most likely tokens whose probabilities first reach top_p), each from its own generator."""
    import torch

    logits = logits.float()
    picks = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        if row.temperature > 0:
            probs = torch.softmax(logits[i].cpu() / row.temperature, dim=-1)
            if row.top_p < 1.0:
                ordered, order = probs.sort(descending=True)
                outside = ordered.cumsum(0) - ordered >= row.top_p  # tokens after the nucleus is full
                probs = probs.index_fill(0, order[outside], 0.0)
            picks[i] = int(torch.multinomial(probs, 1, generator=row.generator))
    return picks
