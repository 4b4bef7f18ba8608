"""Answers from one base model with every adapter of a run loaded on it: batched greedy decoding with
the KV cache and left padding, continuous batches and token streaming for chat/serve, and teacher-forced
answer NLL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError
from qatune.generate.batch import DecodeBatch, Row
from qatune.generate.budget import fitted_budget
from qatune.generate.decoding import greedy_decode
from qatune.generate.nll import decoder_and_head, reply_ids, score_replies, token_batches
from qatune.generate.select import NO_QUESTION, opening, pick
from qatune.generate.streaming import TextStream, cut_at_stop
from qatune.prompts import (
    IGNORE_INDEX,
    encode_pair,
    ensure_chat_template,
    prompt_ids,
    stop_token_ids,
)
from qatune.rag import RAG_SUFFIX, closed_book, is_grounded
from qatune.rag.prompt import grounded_question, shortener
from qatune.rag.retriever import run_retriever
from qatune.trust.guard import opens_with
from qatune.trust.refusal import is_refusal

if TYPE_CHECKING:
    from qatune.config import Config

BASE = "base"
CHOICE_CONTEXT = 8192  # the longest prompt a choice is scored in when the model states no context length
CHOICE_BATCH_TOKENS = 16384  # prompt tokens (padding included) per batch of choices: long prompts, little padding


@dataclass(frozen=True)
class Choosing:
    """How grounded models choose their answer (generate/select.py): scored on each retrieved answer's first
    `head` tokens, unless their answer opens with the run's `refusal`."""

    head: int
    refusal: str


@dataclass
class Generation:
    text: str
    stopped: bool  # ended at EOS/end-of-turn (or a stop string) before the token limit
    new_tokens: int
    reference_nll: float | None = None  # mean NLL per reference-answer token, when references were given
    chosen: bool = False  # a retrieved answer chosen whole, not decoded (generate/select.py)


class Engine:
    """One base in memory; `name` picks an adapter or `base`. A lock keeps adapter switches from
    interleaving between concurrent callers (serve)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        adapters: list[str],
        device: str,
        retriever: Any = None,
        choosing: Choosing | None = None,
        context_head: int = 0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = list(adapters)
        self.device = device
        self.retriever = retriever  # rag.Retriever: with it, every model also answers grounded
        self.choosing = choosing  # grounded models choose a retrieved answer instead of writing one
        self.shorten = shortener(tokenizer, context_head)  # retrieved answers in a prompt cut as training cut them
        self.lock = threading.RLock()
        self.stop_ids = stop_token_ids(tokenizer)
        ensure_chat_template(tokenizer)
        tokenizer.padding_side = "left"
        model.eval()

    @property
    def names(self) -> list[str]:
        closed = [BASE, *self.adapters]
        return closed + [n + RAG_SUFFIX for n in closed] if self.retriever is not None else closed

    def grounded(self, name: str, conversations: list[list[dict]]) -> list[list[dict]]:
        """For a grounded model, each conversation's last user turn carries the retrieved training pairs."""
        return self._grounded(name, conversations)[0]

    def _grounded(self, name: str, conversations: list[list[dict]]) -> tuple[list[list[dict]], list[list[dict]] | None]:
        """The conversations as model `name` answers them, and (grounded) the pairs retrieved for each."""
        if not is_grounded(name):
            return conversations, None
        if self.retriever is None:
            raise QatuneError(f"model {name!r} needs the run's retrieval index; available: {', '.join(self.names)}")
        questions = [conv[-1]["content"] for conv in conversations]
        contexts = self.retriever.contexts(questions)
        asked = [
            [*conv[:-1], {**conv[-1], "content": grounded_question(q, ctx, self.shorten)}]
            for conv, q, ctx in zip(conversations, questions, contexts, strict=True)
        ]
        return asked, contexts

    def _fitted(self, conversations: list[list[dict]], contexts: list[list[dict]] | None) -> list[int]:
        """Each answer's token budget from the training answers retrieved for its question (what it can need): a
        grounded prompt's own context; closed-book, the pairs a grounded prompt would hold. Empty: no index."""
        if contexts is None and self.retriever is None:
            return []
        if contexts is None:
            contexts = self.retriever.contexts([conv[-1]["content"] for conv in conversations])
        lengths = {}
        for pairs in contexts:
            for pair in pairs:
                if pair["answer"] not in lengths:
                    lengths[pair["answer"]] = len(self.tokenizer.encode(pair["answer"], add_special_tokens=False))
        return [fitted_budget(max((lengths[p["answer"]] for p in pairs), default=0)) for pairs in contexts]

    def _copy_check(self, contexts: list[list[dict]]) -> Callable[[list[int]], Callable[[int, list[int]], bool]]:
        """`stop_early` for a batch (given its rows' positions in `contexts`): a grounded answer ends once it
        opens with a retrieved answer's first words (the guard then shows that answer whole)."""

        def for_batch(idx: list[int]) -> Callable[[int, list[int]], bool]:
            def copying(row: int, tokens: list[int]) -> bool:
                words = self.tokenizer.decode(tokens, skip_special_tokens=True).split()
                return any(opens_with(words, p["answer"].split(), complete=True) for p in contexts[idx[row]])

            return copying

        return for_batch

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Any]:
        """Hold the lock and activate adapter `name` (or none for base) for the duration."""
        if name not in self.names:
            raise QatuneError(f"unknown model {name!r}; available: {', '.join(self.names)}")
        name = closed_book(name)
        with self.lock:
            if name == BASE:
                ctx = self.model.disable_adapter() if self.adapters else contextlib.nullcontext()
                with ctx:
                    yield self.model
            else:
                self.model.set_adapter(name)
                yield self.model

    def _gen_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(
        self,
        name: str,
        conversations: list[list[dict]],
        *,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        on_batch: Callable[[int], None] | None = None,
        references: list[str] | None = None,
        fit_budget: bool = False,
        stop_on_copy: bool = False,
        cut_loops: bool = False,
    ) -> list[Generation]:
        """Answer every conversation; batches hold prompts of similar length to keep padding low.

        With `references` (greedy decoding), each Generation also carries the teacher-forced NLL of its
        reference answer (as `answer_nll`), computed from the prompt pass the decoding makes anyway.
        `fit_budget` (a run with an index): each answer may take as many tokens as the longest training answer
        retrieved for its question can need (at most `max_new_tokens`). `stop_on_copy` (greedy): a
        grounded answer stops once it opens with a retrieved answer's first words (it is shown as that answer).
        `cut_loops` (greedy): an answer that starts repeating a span of itself ends before the repeat.
        A choosing engine's grounded models (greedy) choose a retrieved answer instead (`chooses`)."""
        if self.chooses(name, temperature):
            return self._chosen(name, conversations, references, batch_size)
        if references is not None and temperature and temperature > 0:
            raise ValueError("reference answers are scored with greedy decoding only (temperature 0)")
        results, scored = self._decoded(
            name,
            conversations,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            on_batch=on_batch,
            scoring=None if references is None else [references],
            fit_budget=fit_budget,
            stop_on_copy=stop_on_copy,
            cut_loops=cut_loops,
        )
        if references is None:
            return results
        return [replace(r, reference_nll=value) for r, value in zip(results, scored[0], strict=True)]

    def chooses(self, name: str, temperature: float = 0.0) -> bool:
        """Whether model `name` answers by choosing a retrieved answer (a grounded model of a choosing engine,
        greedy); sampled answers are always written."""
        return self.choosing is not None and is_grounded(name) and not (temperature and temperature > 0)

    def _chosen(
        self, name: str, conversations: list[list[dict]], references: list[str] | None, batch_size: int
    ) -> list[Generation]:
        """Each answer is the retrieved answer the question makes most probable (generate/select.py), shown whole,
        unless the model's own answer opens with its refusal (decoded as far as the refusal is long). Asked
        single-turn, two ways in one batch: the grounded prompt (its opening decoded; each retrieved answer's
        opening and any reference scored from its cache) and the same prompt without the question, whose shared
        start (the retrieved pairs) is computed once for both."""
        assert self.choosing is not None
        refusal = self.choosing.refusal
        questions = [conv[-1]["content"] for conv in conversations]
        contexts = self._grounded(name, [[{"role": "user", "content": q}] for q in questions])[1] or []
        cut = opening(self.tokenizer, self.choosing.head)
        width = max((len(ctx) for ctx in contexts), default=0)
        candidates = [[cut(str(ctx[j]["answer"])) if j < len(ctx) else None for ctx in contexts] for j in range(width)]
        opening_tokens = len(self.tokenizer.encode(refusal, add_special_tokens=False)) + 2
        turns = [
            [{"role": "user", "content": grounded_question(asked, c, self.shorten)}]
            for q, c in zip(questions, contexts, strict=True)
            for asked in (q, NO_QUESTION)
        ]
        both = [text for text in (references or []) for text in (text, None)]
        generated, values = self._decoded(
            closed_book(name),
            turns,
            max_new_tokens=opening_tokens,
            limits=[opening_tokens, 1] * len(questions),
            group=2,
            batch_size=2 * batch_size,
            scoring=[[one for one in options for one in (one, one)] for options in candidates]
            + ([both] if references is not None else []),
            batch_tokens=CHOICE_BATCH_TOKENS,
        )
        opened = generated[::2]
        with_question = [one[::2] for one in values]
        without = [one[1::2] for one in values]
        results = []
        for i, (g, ctx) in enumerate(zip(opened, contexts, strict=True)):
            j = pick([with_question[k][i] for k in range(len(ctx))], [without[k][i] for k in range(len(ctx))])
            chosen = Generation(str(ctx[j]["answer"]).strip(), True, 0, chosen=True) if ctx else g
            results.append(g if is_refusal(g.text, refusal) else chosen)
        if references is None:
            return results
        return [replace(r, reference_nll=v) for r, v in zip(results, with_question[width], strict=True)]

    def _decoded(
        self,
        name: str,
        conversations: list[list[dict]],
        *,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        on_batch: Callable[[int], None] | None = None,
        scoring: list[list[str | None]] | None = None,
        fit_budget: bool = False,
        stop_on_copy: bool = False,
        cut_loops: bool = False,
        batch_tokens: int | None = None,
        limits: list[int] | None = None,
        group: int = 0,
    ) -> tuple[list[Generation], list[list[float | None]]]:
        """The answers, and for each list of replies in `scoring` (one per conversation, None: none) their NLL,
        scored from the prompt pass greedy decoding makes anyway. `batch_tokens`: batches also hold at most this
        many prompt tokens, padding included (long prompts). `limits`: each conversation's own token limit.
        `group` > 1: conversations come in runs of this many that start alike (one prompt asked in ways that differ
        at its end); a run stays in one batch and its shared start is computed once."""
        import torch

        asked, contexts = self._grounded(name, conversations)
        encoded = [prompt_ids(self.tokenizer, conv) for conv in asked]
        row_limits = self._fitted(conversations, contexts) if fit_budget else limits or []
        copy_check = self._copy_check(contexts) if stop_on_copy and contexts is not None else None
        sampled = bool(temperature and temperature > 0)
        replies = [self._reply_ids(asked, texts) for texts in scoring or []]
        size = max(group, 1)
        runs = [list(range(g, min(g + size, len(encoded)))) for g in range(0, len(encoded), size)]
        lengths = [max(len(encoded[i]) for i in run) for run in runs]
        order = sorted(range(len(runs)), key=lambda r: lengths[r])
        per_batch = max(batch_size // size, 1)
        in_runs = [order[start : start + per_batch] for start in range(0, len(order), per_batch)]
        if batch_tokens is not None:
            in_runs = [part for b in in_runs for part in token_batches(b, [n * size for n in lengths], batch_tokens)]
        batches = [[i for r in b for i in runs[r]] for b in in_runs]
        results: list[Generation | None] = [None] * len(encoded)
        nll: list[list[float | None]] = [[None] * len(encoded) for _ in replies]
        with self.use(name) as model, torch.inference_mode():
            for idx in batches:
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                if sampled:
                    out = model.generate(**batch, **self._gen_kwargs(max_new_tokens, temperature, top_p))
                    new = out[:, batch["input_ids"].shape[1] :].tolist()
                else:
                    rows = [[one[i] for i in idx] for one in replies]
                    scored: list[list[float | None]] = [[] for _ in rows]
                    pad = self.tokenizer.pad_token_id
                    hook = partial(_score_sets, scored, model, rows, pad)
                    new = greedy_decode(
                        model,
                        batch["input_ids"],
                        batch["attention_mask"],
                        max_new_tokens,
                        self.stop_ids,
                        on_prompt=hook if any(map(any, rows)) else None,
                        budgets=[row_limits[i] for i in idx] if row_limits else None,
                        stop_early=copy_check(idx) if copy_check is not None else None,
                        cut_loops=cut_loops,
                        group=group,
                    )
                    for values, got in zip(nll, scored, strict=True):
                        for i, value in zip(idx, got or [None] * len(idx), strict=True):
                            values[i] = value
                for i, tokens in zip(idx, new, strict=True):
                    results[i] = self._finish(tokens, stop)
                if on_batch:
                    on_batch(len(idx))
        return [r for r in results if r is not None], nll

    def _reply_ids(self, asked: list[list[dict]], texts: list[str | None]) -> list[list[int]]:
        """`reply_ids` of each text after its conversation (none where the text is None), in the model's context."""
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or CHOICE_CONTEXT)
        ids = reply_ids(self.tokenizer, asked, [t or "" for t in texts], max_length=context)
        return [one if t is not None else [] for one, t in zip(ids, texts, strict=True)]

    def _finish(self, tokens: list[int], stop: list[str] | None) -> Generation:
        end = next((j for j, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if end is None else tokens[:end]
        text, cut = cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True).strip(), stop)
        return Generation(text=text, stopped=end is not None or cut, new_tokens=len(kept) + (end is not None))

    def prompts(self, name: str, conversations: list[list[dict]]) -> list[list[int]]:
        """The prompt tokens model `name` answers, through the chat template (with retrieved pairs if grounded)."""
        return [prompt_ids(self.tokenizer, conv) for conv in self.grounded(name, conversations)]

    def new_batch(self, share_start: bool = True) -> DecodeBatch:
        """An empty continuous batch on this engine (rows of any of its models join and leave it);
        `share_start`: the prompts' shared start is computed once and kept (worth it for a long-lived batch)."""
        return DecodeBatch(self, share_start)

    def stream(
        self,
        name: str,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        cancel: threading.Event | None = None,
        stats: dict[str, Any] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are decoded (a batch of one row); setting `cancel` ends generation at the
        next token. `stats`, when given, receives `new_tokens` and `stopped` (as in Generation) at the end."""
        if name not in self.names:
            raise QatuneError(f"unknown model {name!r}; available: {', '.join(self.names)}")
        if self.chooses(name, temperature):  # a chosen answer is known whole: one piece
            chosen = self.generate(name, [messages], batch_size=1)[0]
            if stats is not None:
                stats.update(new_tokens=chosen.new_tokens, stopped=True)
            if chosen.text:
                yield chosen.text
            return
        row = Row(closed_book(name), self.prompts(name, [messages])[0], max_new_tokens, temperature, top_p)
        batch, text = self.new_batch(share_start=False), TextStream(self.tokenizer, self.stop_ids, stop)
        try:
            batch.add([row])
            while True:
                piece = text.update(row.tokens, final=row.done)
                if piece:
                    yield piece
                if row.done or text.cut or (cancel is not None and cancel.is_set()):
                    break
                batch.step()
        finally:
            batch.remove([row])
            if stats is not None:
                stats.update(new_tokens=len(row.tokens), stopped=row.stopped or text.cut)

    def answer_nll(
        self, name: str, pairs: list[tuple[str, str]], *, batch_tokens: int = 4096, max_length: int = 1024
    ) -> list[float | None]:
        """Mean negative log-likelihood per reference-answer token, teacher-forced (no generation noise).

        Rows go through in length order (little padding), and the output layer runs only where a reference
        token is predicted: the vocabulary projection of every position would cost more than the decoder."""
        asked = [
            conv[-1]["content"] for conv in self.grounded(name, [[{"role": "user", "content": q}] for q, _ in pairs])
        ]
        return self._nll(name, asked, [a for _, a in pairs], batch_tokens=batch_tokens, max_length=max_length)

    def _nll(
        self, name: str, turns: list[str], answers: list[str], *, batch_tokens: int = 4096, max_length: int = 1024
    ) -> list[float | None]:
        """`answer_nll` of each answer after its user turn, as given (a grounded turn already holds its pairs)."""
        import torch

        encoded = [encode_pair(self.tokenizer, q, a, max_length) for q, a in zip(turns, answers, strict=True)]
        values: list[float | None] = [None] * len(turns)
        todo = sorted(
            (i for i, e in enumerate(encoded) if e is not None and e.answer_tokens > 0),
            key=lambda i: len(encoded[i].input_ids),  # type: ignore[union-attr]
        )
        pad = self.tokenizer.pad_token_id
        with self.use(name) as model, torch.inference_mode():
            decoder, vocab_logits = decoder_and_head(model)
            for idx in token_batches(todo, [len(e.input_ids) if e else 0 for e in encoded], batch_tokens):
                width = max(len(encoded[i].input_ids) for i in idx)  # type: ignore[union-attr]
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    e = encoded[i]
                    n = len(e.input_ids)  # type: ignore[union-attr]
                    ids[row, :n] = torch.tensor(e.input_ids)  # type: ignore[union-attr]
                    labels[row, :n] = torch.tensor(e.labels)  # type: ignore[union-attr]
                    mask[row, :n] = 1
                hidden = decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                target = labels[:, 1:].to(hidden.device)
                keep = target != IGNORE_INDEX
                loss = torch.nn.functional.cross_entropy(
                    vocab_logits(hidden[:, :-1][keep]), target[keep], reduction="none"
                )
                sums = torch.zeros(len(idx), device=loss.device).index_add_(0, keep.nonzero()[:, 0], loss)
                for row, i in enumerate(idx):
                    values[i] = float(sums[row] / keep[row].sum())
        return values


def _score_sets(
    out: list[list[float | None]], model: Any, sets: list[list[list[int]]], pad: int, cache: Any, logits: Any, mask: Any
) -> None:
    """`score_replies` for each set of replies, from the same prompt cache."""
    for got, rows in zip(out, sets, strict=True):
        score_replies(got, model, rows, pad, cache, logits, mask)


def auto_batch_size(value: int | str, device: str) -> int:
    if isinstance(value, int):
        return value
    return 64


def load_engine(run: Path, config: Config, names: list[str] | None = None) -> Engine:
    """The run's base model with the named adapters (default: every saved one) loaded on it."""
    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import adapters_in, load_adapters
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model
    from qatune.rundir import RunDir

    rundir = RunDir(run)
    wanted = list(dict.fromkeys(closed_book(n) for n in (names or rundir.adapter_names())))
    wanted = [n for n in wanted if n != BASE]
    missing = [n for n in wanted if n not in rundir.adapter_names()]
    if missing:
        raise QatuneError(
            f"no adapter {missing[0]!r} in {rundir.models_dir}; "
            f"available: {', '.join(rundir.adapter_names()) or 'none (run qatune train)'}"
        )
    model_path = resolve_model(config.model)
    placement = choose_placement(config.train.quant, config.train.precision, cpu_bf16=True)
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    base = load_base(
        model_path, placement, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle
    )
    model = load_adapters(base, {n: rundir.model_dir(n) for n in wanted}, allow_pickle=config.allow_pickle)
    if placement.quant == "none":
        adapters_in(model, placement.dtype)
    retriever = run_retriever(rundir)
    choosing = run_choosing(rundir, config, retriever)
    return Engine(model, tokenizer, wanted, placement.device, retriever, choosing, config.train.answer_head)


def run_choosing(rundir: Any, config: Config, retriever: Any) -> Choosing | None:
    """How the run's grounded models choose their answers (None: they write them): `abstain.select`."""
    from qatune.generate.select import selects
    from qatune.trust.run import trained_refusal

    if retriever is None or not selects(rundir, config):
        return None
    return Choosing(head=config.train.answer_head, refusal=trained_refusal(rundir, config))
