"""Generation for the server: jobs run one at a time, in arrival order, on one worker thread (adapter
switches never interleave); a job can be cancelled while queued or running, and hands its text back to the
event loop as events."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from qatune.prompts import prompt_ids
from qatune.serve.errors import ApiError


@dataclass
class Job:
    model: str
    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    aborted: bool = False

    def abort(self) -> None:
        """The client left or the time cap passed: stop at the next token (or never start)."""
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


class Worker:
    """One generation thread takes jobs first come, first served (fair under load, and adapter switches
    never interleave); Engine's own lock also guards against other users of the same engine."""

    def __init__(self, engine: Any, *, context_length: int | None, max_waiting: int):
        self.engine = engine
        self.context_length = context_length
        self.max_waiting = max_waiting
        self.cancelled = 0  # jobs cut short by a disconnect or the time cap
        self.busy = False
        self._count = threading.Lock()
        self._live: dict[int, Job] = {}
        self._queue: queue.SimpleQueue[tuple[Job, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="qatune-generate", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Queue[Event]:
        """Queue a job; its events arrive on the returned queue in order, ending with `end` or `error`."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        with self._count:
            if len(self._live) >= self.max_waiting:
                raise ApiError(429, "the server is busy (too many requests waiting); retry shortly", "server_busy")
            self._live[id(job)] = job

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                job.abort()

        self._queue.put((job, emit))
        return events

    def close(self) -> None:
        with self._count:
            for job in self._live.values():
                job.abort()
        self._queue.put(None)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(*item)

    def _run(self, job: Job, emit: Any) -> None:
        cut_short = True
        try:
            if job.cancel.is_set():  # the client left (or timed out) while waiting its turn
                emit(Event("end"))
            else:
                self.busy = True
                cut_short = self._generate(job, emit)
        except Exception as exc:  # reported to the request that owns the job
            emit(Event("error", error=exc))
        finally:
            self.busy = False
            with self._count:
                self._live.pop(id(job), None)
                self.cancelled += int(job.aborted and cut_short)

    def _generate(self, job: Job, emit: Any) -> bool:
        """Run the job; True when a cancel ended it before its answer was complete."""
        prompt = prompt_ids(self.engine.tokenizer, job.messages)
        if self.context_length and len(prompt) + job.max_tokens > self.context_length:
            raise ApiError(
                400,
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({job.max_tokens}) is "
                f"longer than the model's context ({self.context_length} tokens)",
                "context_length_exceeded",
                "messages",
            )
        emit(Event("start", prompt_tokens=len(prompt)))
        stats: dict[str, Any] = {}
        trim = _Trim()
        pieces = self.engine.stream(
            job.model,
            job.messages,
            max_new_tokens=job.max_tokens,
            temperature=job.temperature,
            top_p=job.top_p,
            stop=job.stop,
            cancel=job.cancel,
            stats=stats,
        )
        for piece in pieces:
            text = trim.feed(piece)
            if text:
                emit(Event("text", text=text))
        tokens, stopped = int(stats.get("new_tokens", 0)), bool(stats.get("stopped"))
        emit(
            Event(
                "end",
                prompt_tokens=len(prompt),
                completion_tokens=tokens,
                finish_reason="stop" if stopped else "length",
            )
        )
        return not stopped and tokens < job.max_tokens
