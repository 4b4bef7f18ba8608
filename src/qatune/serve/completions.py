"""POST /v1/chat/completions: a request becomes a generation job; the answer goes back as one JSON body or
as OpenAI's server-sent chunks. A client disconnect or the time cap cancels the job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import StreamingResponse

from qatune.console import QatuneError
from qatune.serve.errors import ApiError, error_body, log
from qatune.serve.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
    completion_id,
    now,
)
from qatune.serve.worker import Event, Job, Worker


@dataclass(frozen=True)
class Limits:
    max_tokens_cap: int
    default_max_tokens: int
    timeout_s: float


def make_job(body: ChatCompletionRequest, names: list[str], limits: Limits) -> Job:
    if body.model not in names:
        raise ApiError(
            404, f"model {body.model!r} does not exist; available: {', '.join(names)}", "model_not_found", "model"
        )
    wanted = body.requested_tokens() or min(limits.default_max_tokens, limits.max_tokens_cap)
    if wanted > limits.max_tokens_cap:
        raise ApiError(
            400,
            f"max_tokens {wanted} is above this server's cap of {limits.max_tokens_cap}",
            "max_tokens_too_large",
            "max_tokens",
        )
    messages = [m.as_template_message() for m in body.messages]
    return Job(body.model, messages, wanted, body.temperature, body.top_p, body.stop, body.seed)


class _Waiter:
    """Reads a job's events until the request's deadline; past it the job is cancelled (504)."""

    def __init__(self, job: Job, events: asyncio.Queue[Event], timeout_s: float):
        self.job, self.events, self.timeout_s = job, events, timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s

    async def next(self) -> Event:
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise TimeoutError
            event = await asyncio.wait_for(self.events.get(), remaining)
        except TimeoutError:
            self.job.abort()
            raise ApiError(
                504, f"no complete answer within {self.timeout_s:g} s; the generation was cancelled", "timeout"
            ) from None
        if event.kind == "error":
            raise _as_api_error(event.error)
        return event


def _as_api_error(exc: BaseException | None) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QatuneError):
        return ApiError(400, str(exc), "invalid_request")
    log.error("generation failed", exc_info=exc)
    return ApiError(500, f"generation failed ({type(exc).__name__})", "generation_failed")


async def _watch_disconnect(request: Request, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.abort()
            return


async def respond(request: Request, body: ChatCompletionRequest, worker: Worker, limits: Limits):
    job = make_job(body, worker.engine.names, limits)
    waiter = _Waiter(job, worker.submit(job), limits.timeout_s)
    watcher = asyncio.create_task(_watch_disconnect(request, job))
    try:
        if body.stream:
            first = await waiter.next()
            return StreamingResponse(
                _sse(body, waiter, first),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(body, waiter)
    finally:
        watcher.cancel()  # a streaming response watches for the disconnect itself from here on


async def _complete(body: ChatCompletionRequest, waiter: _Waiter) -> ChatCompletion:
    parts: list[str] = []
    event = await waiter.next()
    while event.kind != "end":
        if event.kind == "text":
            parts.append(event.text)
        event = await waiter.next()
    return ChatCompletion(
        id=completion_id(),
        created=now(),
        model=body.model,
        usage=_usage(event),
        choices=[Choice(message=AssistantMessage(content="".join(parts)), finish_reason=event.finish_reason)],
    )


def _usage(event: Event) -> Usage:
    return Usage(
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        total_tokens=event.prompt_tokens + event.completion_tokens,
    )


def _chunk(
    cid: str, created: int, model: str, delta: Delta | None, finish: str | None = None, usage: Usage | None = None
) -> str:
    choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]  # type: ignore[arg-type]
    chunk = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage)
    data = chunk.model_dump(mode="json", exclude=None if usage else {"usage"})
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(body: ChatCompletionRequest, waiter: _Waiter, event: Event) -> AsyncIterator[str]:
    cid, created, finished = completion_id(), now(), False
    try:
        yield _chunk(cid, created, body.model, Delta(role="assistant", content=""))
        while event.kind != "end":
            if event.kind == "text":
                yield _chunk(cid, created, body.model, Delta(content=event.text))
            event = await waiter.next()
        yield _chunk(cid, created, body.model, Delta(), finish=event.finish_reason)
        if body.include_usage():
            yield _chunk(cid, created, body.model, None, usage=_usage(event))
        finished = True
        yield "data: [DONE]\n\n"
    except ApiError as exc:  # headers are sent: report the failure inside the stream, as OpenAI does
        finished = True
        yield f"data: {json.dumps(error_body(exc.status, exc.message, exc.code))}\n\n"
    finally:
        if not finished:
            waiter.job.abort()
