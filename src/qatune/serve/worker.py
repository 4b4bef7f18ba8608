"""Generation for the server: one thread runs a continuous batch. Requests that arrive while others are being
answered join it at the next step (up to `max_batch` rows, the rest wait in arrival order), finished and
cancelled ones leave it, and each job's text goes back to the event loop as events."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from qatune.generate.batch import Row
from qatune.generate.streaming import TextStream
from qatune.prompts import prompt_ids
from qatune.rag import closed_book
from qatune.serve.errors import ApiError


@dataclass
class Job:
    model: str
    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    aborted: bool = False

    def abort(self) -> None:
        """The client left or the time cap passed: stop at the next step (or never start)."""
        self.aborted = True
        self.cancel.set()


@dataclass
class Event:
    kind: Literal["start", "text", "end", "error"]
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"
    error: BaseException | None = None


Emit = Callable[[Event], None]
# Answers a job without generation (returns the answer), or returns None to let the model answer it.
Precheck = Callable[[Job], str | None]


class Checks:
    """What the worker asks of each job (serve/abstain.py answers for a run): `precheck` may answer it without
    generation; when `holds(job)`, its text is sent only once complete, as `postcheck(job, text)` returns it."""

    def precheck(self, job: Job) -> str | None:
        return None

    def holds(self, job: Job) -> bool:
        return False

    def postcheck(self, job: Job, text: str) -> str:
        return text


class _Trim:
    """Drops leading and trailing whitespace from a stream of pieces, so the streamed text equals the
    stripped whole answer: trailing whitespace is held back until more text follows it."""

    def __init__(self) -> None:
        self.started = False
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        body = piece.rstrip()
        if not body:
            self.held += piece
            return ""
        out = self.held + body
        self.held = piece[len(body) :]
        return out


@dataclass(eq=False)
class _Running:
    job: Job
    emit: Emit
    row: Row
    text: TextStream
    trim: _Trim = field(default_factory=_Trim)
    held: list[str] | None = None  # the pieces kept back until the answer is complete (a check may replace it)


class Worker:
    """Owns the engine's batch. Fair under load: waiting jobs join in arrival order; where the model cannot
    mix adapters in one pass, a batch holds one adapter and the next adapter waits until it has drained."""

    def __init__(
        self,
        engine: Any,
        *,
        context_length: int | None,
        max_waiting: int,
        max_batch: int = 16,
        precheck: Precheck | None = None,
        checks: Checks | None = None,
    ):
        self.engine = engine
        self.context_length = context_length
        self.max_waiting = max_waiting
        self.max_batch = max_batch
        self.precheck = precheck
        self.checks = checks or Checks()
        self.cancelled = 0  # jobs cut short by a disconnect or the time cap
        self.busy = False
        self.closed = False
        self._count = threading.Lock()
        self._live: dict[int, Job] = {}  # waiting or running
        self._inbox: queue.SimpleQueue[tuple[Job, Emit] | None] = queue.SimpleQueue()
        self._waiting: deque[tuple[Job, Emit]] = deque()
        self._running: list[_Running] = []
        self._batch = engine.new_batch()
        self._thread = threading.Thread(target=self._loop, name="qatune-generate", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        with self._count:
            return len(self._live) - len(self._running)

    def submit(self, job: Job) -> asyncio.Queue[Event]:
        """Queue a job; its events arrive on the returned queue in order, ending with `end` or `error`."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        with self._count:
            if self.closed:
                raise ApiError(503, "the server is shutting down; retry on another instance", "shutting_down")
            if len(self._live) >= self.max_waiting:
                raise ApiError(429, "the server is busy (too many requests waiting); retry shortly", "server_busy")
            self._live[id(job)] = job

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                job.abort()

        self._inbox.put((job, emit))
        return events

    def close(self) -> None:
        with self._count:
            self.closed = True
            for job in self._live.values():
                job.abort()
        self._inbox.put(None)

    def _loop(self) -> None:
        while self._collect():
            self._drop_cancelled()
            self._admit()
            self._step()

    def _collect(self) -> bool:
        """Move arrived jobs to the waiting line; block only when there is nothing to do. False on close."""
        block = not (self._running or self._waiting)
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if item is None:
                return False
            self._waiting.append(item)
            block = False

    def _drop_cancelled(self) -> None:
        for job, emit in [w for w in self._waiting if w[0].cancel.is_set()]:
            self._waiting.remove((job, emit))
            self._end(job, emit, Event("end"), cut_short=True)
        gone = [r for r in self._running if r.job.cancel.is_set()]
        if gone:
            self._leave(gone, [Event("end")] * len(gone), cut_short=True)

    def _admit(self) -> None:
        """Waiting jobs join the batch, in arrival order, while there is room (and their adapter fits)."""
        taken: list[tuple[Job, Emit]] = []
        while self._waiting and len(self._running) + len(taken) < self.max_batch:
            adapter = closed_book(self._waiting[0][0].model)
            if not self._batch.accepts(adapter, [closed_book(j.model) for j, _ in taken]):
                break
            taken.append(self._waiting.popleft())
        joining = [r for job, emit in taken if (r := self._prepare(job, emit)) is not None]
        if not joining:
            return
        try:
            self._batch.add([r.row for r in joining])
        except Exception as exc:  # reported to the requests that were joining (none of them stays)
            self._batch.remove([r.row for r in joining])
            for r in joining:
                self._end(r.job, r.emit, Event("error", error=exc), cut_short=True)
            return
        self._running += joining
        self.busy = True

    def _prepare(self, job: Job, emit: Emit) -> _Running | None:
        """The one place a request is looked at before it is generated: a precheck may answer it, a choosing
        grounded model answers it whole (generate/select.py), else its prompt is built (with retrieved pairs for
        grounded models) and must fit the model's context."""
        try:
            answer = self.precheck(job) if self.precheck else None
            answer = answer if answer is not None else self.checks.precheck(job)
            chooses = getattr(self.engine, "chooses", None)  # qatune's engine: grounded models may choose
            if answer is None and chooses is not None and chooses(job.model, job.temperature):  # whole, not decoded
                answer = self.engine.generate(job.model, [job.messages], batch_size=1)[0].text
                answer = self.checks.postcheck(job, answer) if self.checks.holds(job) else answer
            if answer is not None:
                self._answer_directly(job, emit, answer)
                return None
            prompt = self.engine.prompts(job.model, [job.messages])[0]
            if self.context_length and len(prompt) + job.max_tokens > self.context_length:
                raise ApiError(
                    400,
                    f"the prompt ({len(prompt)} tokens) plus max_tokens ({job.max_tokens}) is "
                    f"longer than the model's context ({self.context_length} tokens)",
                    "context_length_exceeded",
                    "messages",
                )
        except Exception as exc:  # reported to the request that owns the job
            self._end(job, emit, Event("error", error=exc))
            return None
        emit(Event("start", prompt_tokens=len(prompt)))
        row = Row(closed_book(job.model), prompt, job.max_tokens, job.temperature, job.top_p, job.seed)
        text = TextStream(self.engine.tokenizer, self.engine.stop_ids, job.stop)
        return _Running(job, emit, row, text, held=[] if self.checks.holds(job) else None)

    def _answer_directly(self, job: Job, emit: Emit, answer: str) -> None:
        """A precheck's answer, sent as a generated one would be (token counts of the closed-book prompt)."""
        prompt = len(prompt_ids(self.engine.tokenizer, job.messages))
        tokens = len(self.engine.tokenizer.encode(answer.strip(), add_special_tokens=False))
        emit(Event("start", prompt_tokens=prompt))
        if answer.strip():
            emit(Event("text", text=answer.strip()))
        self._end(job, emit, Event("end", prompt_tokens=prompt, completion_tokens=tokens))

    def _step(self) -> None:
        """One token for every running row, then each job's new text goes out; finished rows leave."""
        try:
            self._batch.step()
        except Exception as exc:  # a failed pass fails every row that was in it
            self._leave(list(self._running), [Event("error", error=exc)] * len(self._running), cut_short=True)
            return
        done, ends = [], []
        for r in self._running:
            text = r.trim.feed(r.text.update(r.row.tokens, final=r.row.done))
            if text and r.held is not None:
                r.held.append(text)
            elif text:
                r.emit(Event("text", text=text))
            if r.row.done or r.text.cut:
                stopped = r.row.stopped or r.text.cut
                if r.held is not None:
                    checked = self.checks.postcheck(r.job, "".join(r.held)).strip()
                    if checked:
                        r.emit(Event("text", text=checked))
                done.append(r)
                ends.append(
                    Event(
                        "end",
                        prompt_tokens=len(r.row.prompt),
                        completion_tokens=len(r.row.tokens),
                        finish_reason="stop" if stopped else "length",
                    )
                )
        if done:
            self._leave(done, ends, cut_short=False)

    def _leave(self, rows: list[_Running], events: list[Event], cut_short: bool) -> None:
        self._batch.remove([r.row for r in rows])
        self._running = [r for r in self._running if r not in rows]
        self.busy = bool(self._running)
        for r, event in zip(rows, events, strict=True):
            self._end(r.job, r.emit, event, cut_short=cut_short)

    def _end(self, job: Job, emit: Emit, event: Event, cut_short: bool = False) -> None:
        emit(event)
        with self._count:
            self._live.pop(id(job), None)
            self.cancelled += int(job.aborted and cut_short)
