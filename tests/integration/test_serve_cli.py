"""`qatune serve` as a user starts it: a real process on loopback that answers the `openai` client with the
key, refuses it without, stops cleanly on Ctrl-C, and reports a busy port in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from adapter_runs import make_run

KEY = "cli-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return make_run(tmp_path_factory.mktemp("cli") / "run", tiny_model_dir)


def _start(run, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "qatune", "serve", "--run", str(run), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "QATUNE_API_KEY": ""},
    )


def _wait_healthy(proc: subprocess.Popen, url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not come up")


def test_serve_answers_with_the_key_and_stops_on_ctrl_c(run):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(run, port, "--api-key", KEY)
    try:
        _wait_healthy(proc, url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["base", "epoch-1", "epoch-2"]
        reply = client.chat.completions.create(
            model="epoch-2", max_tokens=4, messages=[{"role": "user", "content": "Who teaches?"}]
        )
        assert reply.choices[0].finish_reason == "length"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err and f"127.0.0.1:{port}" in err


def test_busy_port_is_a_one_line_error(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _start(run, taken.getsockname()[1])
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in err


def test_missing_run_is_a_one_line_error(tmp_path):
    proc = _start(tmp_path / "nowhere", _free_port())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "run directory not found" in err and "Traceback" not in err


def test_max_batch_below_one_is_a_one_line_error(run):
    proc = _start(run, _free_port(), "--max-batch", "0")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--max-batch must be 1 or more" in err and "Traceback" not in err
