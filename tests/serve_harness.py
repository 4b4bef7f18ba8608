"""Server test helpers: run an app under a real uvicorn on a free loopback port in a thread, and a
scripted engine (fixed answers, adjustable token pace, a continuous batch of its own) for page, timeout,
disconnect and queueing tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (port chosen by the OS, bound before the server starts)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class ScriptedEngine:
    """Duck-types qatune.generate.Engine for the server: `answers[(model, question)]` or
    '<model> answers: <question>', one tokenizer token per step, `delay` seconds per step; `endless` never
    stops. `batches` records how many rows each step decoded together."""

    def __init__(
        self,
        tokenizer: Any,
        adapters: list[str],
        answers: dict | None = None,
        delay: float = 0.0,
        endless: bool = False,
    ):
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.answers = answers or {}
        self.delay = delay
        self.endless = endless
        self.stop_ids: list[int] = []
        self.lock = threading.RLock()
        self.produced: list[int] = []  # tokens produced per finished generation
        self.batches: list[int] = []  # rows per step

    @property
    def names(self) -> list[str]:
        return ["base", *self.adapters]

    def prompts(self, name: str, conversations: list[list[dict]]) -> list[list[int]]:
        if name not in self.names:
            raise ValueError(f"unknown model {name!r}")
        return [self.tokenizer.encode(conv[-1]["content"], add_special_tokens=False) for conv in conversations]

    def new_batch(self) -> ScriptedBatch:
        return ScriptedBatch(self)

    def script(self, name: str, prompt: list[int]) -> list[int]:
        """The answer's tokens (endless: a long repetition); an exception as the answer is raised."""
        if self.endless:
            return self.tokenizer.encode("more " * 5000, add_special_tokens=False)
        question = self.tokenizer.decode(prompt)
        answer = self.answers.get((name, question), f"{name} answers: {question}")
        if isinstance(answer, Exception):
            raise answer
        return self.tokenizer.encode(answer)


class ScriptedBatch:
    """Rows advance one scripted token per step, all in one `delay`, holding the engine's lock."""

    mixed = True

    def __init__(self, engine: ScriptedEngine):
        self.engine = engine
        self.rows: list[Any] = []
        self._scripts: dict[int, list[int]] = {}

    def accepts(self, adapter: str, others: list[str]) -> bool:
        return True

    def add(self, rows: list[Any]) -> None:
        for row in rows:
            self._scripts[id(row)] = self.engine.script(row.adapter, row.prompt)
        self._advance(rows)
        self.rows += [r for r in rows if not r.done]

    def step(self) -> None:
        if self.rows:
            self._advance(self.rows)

    def remove(self, rows: list[Any]) -> None:
        for row in rows:
            if self._scripts.pop(id(row), None) is not None:
                self.engine.produced.append(len(row.tokens))
        self.rows = [r for r in self.rows if r not in rows]

    def _advance(self, rows: list[Any]) -> None:
        with self.engine.lock:
            time.sleep(self.engine.delay)
            self.engine.batches.append(len(rows))
            for row in rows:
                script = self._scripts[id(row)]
                row.tokens.append(script[len(row.tokens)])
                row.stopped = len(row.tokens) == len(script)
