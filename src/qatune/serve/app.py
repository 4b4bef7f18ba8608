"""The server as an app factory: `create_app(settings)` builds the routes, the worker and the guards with
no module state, and `serve()` runs it with uvicorn for `qatune serve`."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from qatune.console import QatuneError, info, warn
from qatune.serve import errors
from qatune.serve.completions import Limits, respond
from qatune.serve.errors import ApiError
from qatune.serve.guard import Guard
from qatune.serve.schemas import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList, now
from qatune.serve.worker import Checks, Precheck, Worker

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_REPORT_CSP = (
    "sandbox allow-scripts; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; font-src data:"
)


@dataclass
class Settings:
    """Everything the app needs. `engine` (a qatune.generate.Engine) is loaded from `run` when None."""

    run: Path | None = None
    engine: Any = None
    api_key: str | None = None
    allowed_hosts: list[str] | None = field(default_factory=lambda: list(LOOPBACK_HOSTS))  # None: any
    max_body_bytes: int = 1_000_000
    max_tokens_cap: int = 1024  # larger max_tokens is refused with 400, not silently clamped
    default_max_tokens: int = 256
    request_timeout_s: float = 120.0  # queueing + generation; past it the job is cancelled (504)
    max_waiting: int = 64  # requests queued or running; more get 429
    max_batch: int = 16  # requests decoded together; 1 answers one request at a time
    precheck: Precheck | None = None  # may answer a request without generation (see worker.Precheck)
    checks: Checks | None = None  # how the run's models abstain (serve/abstain.py); loaded from `run` when None
    abstain: bool = True  # with `run`: the run's answer-time checks, as eval applies them


def _page() -> tuple[str, str]:
    """The comparison page and its Content-Security-Policy (only its own inline script may run)."""
    html = resources.files("qatune.serve").joinpath("page.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, csp


def _load_engine(run: Path | None) -> Any:
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.rundir import RunDir

    if run is None:
        raise QatuneError("serve needs --run RUN (a run directory)")
    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found; check --run", path=rundir.root)
    if not rundir.adapter_names():
        warn(f"no fine-tuned models in {rundir.models_dir} yet; serving the base model only")
    return load_engine(rundir.root, load_for_run(rundir.root, None, {}, save=False))


def _context_length(engine: Any) -> int | None:
    config = getattr(getattr(engine, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def create_app(settings: Settings) -> FastAPI:
    engine = settings.engine if settings.engine is not None else _load_engine(settings.run)
    checks = settings.checks
    if checks is None and settings.run is not None and settings.abstain:
        from qatune.serve.abstain import run_abstain

        checks = run_abstain(settings.run, engine)
    worker = Worker(
        engine,
        context_length=_context_length(engine),
        max_waiting=settings.max_waiting,
        max_batch=settings.max_batch,
        precheck=settings.precheck,
        checks=checks,
    )
    limits = Limits(settings.max_tokens_cap, settings.default_max_tokens, settings.request_timeout_s)
    page, page_csp = _page()
    report = None
    if settings.run is not None:
        from qatune.rundir import RunDir

        report = RunDir(settings.run).report_html
    created = now()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="qatune", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings, app.state.worker = settings, worker
    errors.install(app)
    app.add_middleware(
        Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes, allowed_hosts=settings.allowed_hosts
    )

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "busy": worker.busy, "running": worker.running, "waiting": worker.waiting}

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=created) for name in engine.names])

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> ModelCard:
        if model_id not in engine.names:
            raise ApiError(404, f"model {model_id!r} does not exist", "model_not_found", "model")
        return ModelCard(id=model_id, created=created)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> ChatCompletion | Response:
        return await respond(request, body, worker, limits)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_csp, "Cache-Control": "no-store"})

    @app.api_route("/report", methods=["GET", "HEAD"])
    async def run_report() -> FileResponse:
        if report is None or not report.is_file():
            raise ApiError(404, "this run has no report yet: run `qatune report --run RUN`", "report_not_found")
        return FileResponse(
            report,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _REPORT_CSP, "Cache-Control": "no-store"},
        )

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise QatuneError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host") from exc
    return sock


def serve(
    run: Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_batch: int = 16
) -> None:
    import uvicorn

    if api_key is not None and not api_key.strip():
        raise QatuneError("--api-key is empty; give a secret key or leave the flag out")
    if max_batch < 1:
        raise QatuneError(f"--max-batch must be 1 or more (got {max_batch})")
    loopback = is_loopback(host)
    if not loopback and not api_key:
        warn(
            f"{host} is reachable from other machines and no --api-key is set: anyone who can reach "
            "it can use the models; add --api-key KEY"
        )
    sock = _bind(host, port)  # a busy port fails before minutes of model loading, not after
    try:
        app = create_app(
            Settings(
                run=Path(run),
                api_key=api_key,
                allowed_hosts=list(LOOPBACK_HOSTS) if loopback else None,
                max_batch=max_batch,
            )
        )
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    info(
        f"models: {', '.join(app.state.worker.engine.names)}; page http://{shown}:{port}/ , "
        f"API http://{shown}:{port}/v1" + (" (Bearer key required)" if api_key else "")
    )
    config = uvicorn.Config(
        app, log_level="info", server_header=False, timeout_graceful_shutdown=5, limit_concurrency=256
    )
    uvicorn.Server(config).run(sockets=[sock])
