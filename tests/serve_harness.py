"""Server test helpers: run an app under a real uvicorn on a free loopback port in a thread, and a
scripted engine (fixed answers, adjustable token pace) for page, timeout and disconnect tests."""

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
    '<model> answers: <question>', one word per token, `delay` seconds per token; `endless` never stops."""

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
        self.lock = threading.RLock()
        self.produced: list[int] = []  # tokens produced per finished generation

    @property
    def names(self) -> list[str]:
        return ["base", *self.adapters]

    def _pieces(self, name: str, question: str) -> Iterator[str]:
        if self.endless:
            while True:
                yield "more "
        text = self.answers.get((name, question), f"{name} answers: {question}")
        yield from (w + " " for w in text.split(" "))

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
        stats: dict | None = None,
    ) -> Iterator[str]:
        cancel = cancel or threading.Event()
        count, ended = 0, False
        with self.lock:
            try:
                for piece in self._pieces(name, messages[-1]["content"]):
                    if cancel.is_set() or count >= max_new_tokens:
                        break
                    time.sleep(self.delay)
                    count += 1
                    yield piece
                else:
                    ended = True
            finally:
                self.produced.append(count)
                if stats is not None:
                    stats.update(new_tokens=count, stopped=ended)
