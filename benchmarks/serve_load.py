"""Load test of `qatune serve` on loopback: concurrent clients for a bounded time, alternating adapters, some
streaming, some malformed, some without the API key. Reports p50/p95 latency, answers/s, error counts,
answers that differ from the one-at-a-time answers (and those that are another model's answer) and the
server's memory. tests/integration/test_load.py runs it briefly.

The sweep starts the server twice, one at a time (`--max-batch 1`) and batched (`--max-batch N`), and
measures each at every client count; the reference answers come from the one-at-a-time server.

    python benchmarks/serve_load.py --run RUN [--duration 60] [--clients 1,4,16] [--max-tokens 16]
    python benchmarks/serve_load.py --make-run tiny|default   # builds a throwaway two-adapter run first
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

QUESTIONS = [
    "Who is the instructor?",
    "How is the grade computed?",
    "What is the title of this course?",
    "When is the final project due?",
    "Where are the lectures?",
]
KINDS = ["plain", "stream", "plain", "malformed", "stream", "plain", "no-key", "plain"]


@dataclass
class LoadResult:
    duration_s: float = 0.0
    requests: int = 0
    answered: int = 0  # valid requests answered 200
    rejected_as_expected: int = 0  # malformed -> 400, missing key -> 401
    errors_5xx: int = 0
    unexpected: list[str] = field(default_factory=list)  # any other status or a broken stream
    wrong_answers: int = 0  # a 200 whose text differs from that model's known answer
    wrong_adapter: int = 0  # ... and is another model's known answer to the question
    latencies_ms: list[float] = field(default_factory=list)  # answered requests only
    rss_mb: list[float] = field(default_factory=list)  # sampled once a second
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        pct = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)) if lat else (lambda p: None)
        return {
            "duration_s": round(self.duration_s, 1),
            "requests": self.requests,
            "answered": self.answered,
            "requests_per_s": round(self.requests / self.duration_s, 2) if self.duration_s else None,
            "answers_per_s": round(self.answered / self.duration_s, 2) if self.duration_s else None,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
            "rejected_as_expected": self.rejected_as_expected,
            "errors_5xx": self.errors_5xx,
            "unexpected": len(self.unexpected),
            "wrong_answers": self.wrong_answers,
            "wrong_adapter": self.wrong_adapter,
            "rss_start_mb": self.rss_mb[0] if self.rss_mb else None,
            "rss_end_mb": self.rss_mb[-1] if self.rss_mb else None,
            "rss_max_mb": max(self.rss_mb) if self.rss_mb else None,
        }


def _body(model: str, question: str, max_tokens: int, stream: bool) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


def ask(client: httpx.Client, url: str, body: dict, headers: dict) -> tuple[int, str | None]:
    """(status, answer text) for one request, streamed or not; text None when the status is not 200."""
    if not body.get("stream"):
        response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else None
        return response.status_code, text
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, None
        parts, done = [], False
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"error in stream: {chunk['error'].get('message')}")
                parts += [c["delta"].get("content") or "" for c in chunk["choices"]]
        if not done:
            raise RuntimeError("stream ended without [DONE]")
        return 200, "".join(parts)


def expected_answers(
    url: str, models: list[str], questions: list[str], max_tokens: int, api_key: str | None = None
) -> dict[tuple[str, str], str]:
    """Each model's greedy answer to each question, asked one at a time before the load starts."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=120) as client:
        return {
            (m, q): ask(client, url, _body(m, q, max_tokens, False), headers)[1] or ""
            for m in models
            for q in questions
        }


def _client_loop(
    i: int,
    url: str,
    models: list[str],
    questions: list[str],
    expected: dict,
    max_tokens: int,
    api_key: str | None,
    stop_at: float,
    result: LoadResult,
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=120) as client:
        k = 0
        while time.monotonic() < stop_at:
            kind = KINDS[(i + k) % len(KINDS)]
            model, question = models[(i + k) % len(models)], questions[(3 * i + k) % len(questions)]
            k += 1
            if kind == "no-key" and not api_key:
                kind = "plain"
            started = time.monotonic()
            try:
                status, text, want = _one(client, url, kind, model, question, max_tokens, auth)
            except Exception as exc:  # counted, never fatal: the run goes on
                with result.lock:
                    result.requests += 1
                    result.unexpected.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            elapsed = (time.monotonic() - started) * 1000
            with result.lock:
                result.requests += 1
                if status >= 500:
                    result.errors_5xx += 1
                elif status != want:
                    result.unexpected.append(f"{kind}: HTTP {status}")
                elif status != 200:
                    result.rejected_as_expected += 1
                else:
                    result.answered += 1
                    result.latencies_ms.append(elapsed)
                    own = expected[(model, question)]
                    result.wrong_answers += int(text != own)
                    result.wrong_adapter += int(
                        text != own and any(text == expected[(m, question)] for m in models if m != model)
                    )


def _one(client, url, kind, model, question, max_tokens, auth) -> tuple[int, str | None, int]:
    if kind == "malformed":
        r = client.post(
            f"{url}/v1/chat/completions",
            content=b'{"model": "' + model.encode() + b'", "messages": [',
            headers={**auth, "Content-Type": "application/json"},
        )
        return r.status_code, None, 400
    body = _body(model, question, max_tokens, kind == "stream")
    status, text = ask(client, url, body, {} if kind == "no-key" else auth)
    return status, text, 401 if kind == "no-key" else 200


def run_load(
    url: str,
    models: list[str],
    questions: list[str],
    expected: dict,
    *,
    clients: int = 16,
    duration_s: float = 20,
    max_tokens: int = 16,
    api_key: str | None = None,
    rss: Callable[[], float] | None = None,
) -> LoadResult:
    result = LoadResult()
    started = time.monotonic()
    stop_at = started + duration_s
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(1.0):
            result.rss_mb.append(round(rss(), 1))  # type: ignore[misc]

    if rss:
        result.rss_mb.append(round(rss(), 1))
        threading.Thread(target=sample, daemon=True).start()
    threads = [
        threading.Thread(
            target=_client_loop, args=(i, url, models, questions, expected, max_tokens, api_key, stop_at, result)
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampling.set()
    result.duration_s = time.monotonic() - started
    if rss:
        result.rss_mb.append(round(rss(), 1))
    return result


# ---- standalone: start `qatune serve` as its own process and measure it ----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_run(kind: str) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from adapter_runs import make_run  # the two-adapter test run (random LoRA weights, no training)
    from conftest import build_tiny_model
    from qatune.models.resolve import resolve_model

    root = Path(tempfile.mkdtemp(prefix="qatune-load-"))
    model = build_tiny_model(root / "tiny") if kind == "tiny" else Path(resolve_model("default"))
    return make_run(root / "run", model)


def _serve(run: Path, api_key: str | None, max_batch: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "qatune", "serve", "--run", str(run), "--port", str(port)]
    cmd += ["--max-batch", str(max_batch)] + (["--api-key", api_key] if api_key else [])
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("qatune serve did not start")


def _point(url: str, proc: subprocess.Popen, args: argparse.Namespace, models: list[str], expected: dict, clients: int):
    """One measurement, with the cores other processes kept busy meanwhile (the machine is shared)."""
    import psutil

    server = psutil.Process(proc.pid)
    server_cpu, since = sum(server.cpu_times()[:2]), record.snapshot()
    result = run_load(
        url,
        models,
        QUESTIONS,
        expected,
        clients=clients,
        duration_s=args.duration,
        max_tokens=args.max_tokens,
        api_key=args.api_key,
        rss=lambda: server.memory_info().rss / 2**20,
    )
    server_cores = (sum(server.cpu_times()[:2]) - server_cpu) / result.duration_s
    point = {"clients": clients, "models": models, **result.summary()}
    point["server_cores"] = round(server_cores, 2)
    point["other_cores"] = round(max(0.0, record.other_cores(since) - server_cores), 2)
    point["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    point["unexpected_sample"] = result.unexpected[:5]
    return point


def _sweep(run: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Both servers up at once (only one is asked at a time); at each client count the one-at-a-time server,
    then the batched one, so a change in the machine's load falls on both. The reference answers are the
    one-at-a-time server's, asked one by one."""
    sizes = [args.max_batch] if args.only_batched else [1, args.max_batch]
    servers = [(size, *_serve(run, args.api_key, size, args.threads)) for size in sizes]
    points = []
    try:
        auth = {"Authorization": f"Bearer {args.api_key}"}
        url = servers[0][2]
        models = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30, headers=auth).json()["data"]]
        expected = expected_answers(url, models, QUESTIONS, args.max_tokens, args.api_key)
        for clients in args.clients:
            for size, proc, url in servers:
                points.append({"max_batch": size, **_point(url, proc, args, models, expected, clients)})
                print(json.dumps(points[-1]), flush=True)
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            proc.wait(30)
    return points, expected


def _table(points: list[dict]) -> list[str]:
    """One line per point (one-at-a-time and batched side by side per client count), then the ratios."""
    head = ("clients", "max-batch", "answers/s", "p50 s", "p95 s", "5xx", "differ", "wrong-adapter", "other cores")
    keys = ("clients", "max_batch", "answers_per_s", "p50_ms", "p95_ms", "errors_5xx", "wrong_answers")
    lines = ["  ".join(f"{h:>9}" for h in head)]
    for p in sorted(points, key=lambda p: (p["clients"], p["max_batch"])):
        cells = [p[k] / 1000 if k.endswith("_ms") and p[k] else p[k] for k in keys]
        lines.append("  ".join(f"{c:>9.2f}" if isinstance(c, float) else f"{c!s:>9}" for c in cells))
        lines[-1] += f"  {p['wrong_adapter']:>9}  {p['other_cores']:>9.2f}"
    one = {p["clients"]: p for p in points if p["max_batch"] == 1}
    for p in points:
        base = one.get(p["clients"])
        if p["max_batch"] > 1 and base and base["answers_per_s"] and base["p95_ms"] and p["p95_ms"]:
            speed, p95 = p["answers_per_s"] / base["answers_per_s"], p["p95_ms"] / base["p95_ms"]
            lines.append(f"{p['clients']} clients: batched {speed:.2f}x the answers/s, p95 latency {p95:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--make-run", choices=["tiny", "default"])
    parser.add_argument("--duration", type=float, default=60, help="seconds per point")
    parser.add_argument("--clients", type=lambda v: [int(c) for c in v.split(",")], default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=16, help="the batched server's --max-batch")
    parser.add_argument("--only-batched", action="store_true", help="skip the one-at-a-time server")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--api-key", default="load-test-key")
    parser.add_argument("--threads", type=int, help="the servers' OMP_NUM_THREADS (default: torch's, one per core)")
    parser.add_argument("--save", action="store_true", help="append the points to benchmarks/results/serve_load.json")
    args = parser.parse_args()
    run = args.run or _make_run(args.make_run or "tiny")
    points, expected = _sweep(run, args)
    models = {m for m, _ in expected}
    distinct = sum(len({expected[(m, q)] for m in models}) == len(models) for q in QUESTIONS)
    threads = args.threads or "default"
    print(f"run {run}; {args.max_tokens}-token answers; {args.duration:g} s per point; server threads {threads}")
    print(f"questions each model answers differently (wrong-adapter answers detectable): {distinct}/{len(QUESTIONS)}")
    for line in _table(points):
        print(line)
    summary = {"run": str(run), "max_tokens": args.max_tokens, "duration_s": args.duration, "threads": args.threads}
    summary["points"] = points
    print(json.dumps(summary))
    if args.save:
        print(f"saved to {record.save('serve_load', summary)}")


if __name__ == "__main__":
    main()
