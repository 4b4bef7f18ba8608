"""Server safety over real HTTP: the API key guards every API route and the report, the time cap answers
504 and cancels, a vanished client frees the generator, a full queue answers 429, and no CORS is granted."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from qatune.models.load import load_tokenizer
from qatune.serve.app import Settings, create_app
from serve_harness import ScriptedEngine, running

KEY = "s3cret-key-for-tests"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def _client(url: str, key: str = "unused", timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout)


def _wait(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_api_key_guards_api_and_report_but_not_page(tmp_path, tokenizer):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.html").write_text("<html><body>report</body></html>")
    app = create_app(Settings(run=tmp_path, engine=ScriptedEngine(tokenizer, ["best"]), api_key=KEY))
    with running(app) as url:
        with pytest.raises(openai.AuthenticationError) as err:
            _client(url, "wrong-key").models.list()
        assert err.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            _client(url, "wrong-key").chat.completions.create(model="best", messages=HI)
        for request in [
            httpx.Request("GET", f"{url}/v1/models"),
            httpx.Request("POST", f"{url}/v1/chat/completions", content=b"{bad json"),
            httpx.Request("GET", f"{url}/v1/nothing-here"),
            httpx.Request("GET", f"{url}/report"),
            httpx.Request("GET", f"{url}/v1/models", headers={"Authorization": f"Basic {KEY}"}),
        ]:
            response = httpx.Client().send(request)
            assert response.status_code == 401, request.url
            assert response.json()["error"]["type"] == "invalid_request_error"
        reply = _client(url, KEY).chat.completions.create(model="best", messages=HI)
        assert reply.choices[0].message.content == "best answers: hi"
        auth = {"Authorization": f"Bearer {KEY}"}
        report = httpx.get(f"{url}/report", headers=auth)
        assert report.status_code == 200 and "report" in report.text
        assert "sandbox" in report.headers["content-security-policy"]
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "<form" in page.text
        assert "script-src 'sha256-" in page.headers["content-security-policy"]


def test_report_is_404_until_it_exists(tmp_path, tokenizer):
    app = create_app(Settings(run=tmp_path, engine=ScriptedEngine(tokenizer, ["best"])))
    with running(app) as url:
        response = httpx.get(f"{url}/report")
        assert response.status_code == 404 and response.json()["error"]["code"] == "report_not_found"


def test_no_cross_origin_access_is_granted(tokenizer):
    app = create_app(Settings(engine=ScriptedEngine(tokenizer, ["best"])))
    with running(app) as url:
        origin = {"Origin": "https://elsewhere.example"}
        response = httpx.get(f"{url}/v1/models", headers=origin)
        assert "access-control-allow-origin" not in response.headers
        preflight = httpx.options(
            f"{url}/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        assert response.headers["x-content-type-options"] == "nosniff"


def test_time_cap_answers_504_and_cancels(tokenizer):
    engine = ScriptedEngine(tokenizer, ["best"], delay=0.02, endless=True)
    app = create_app(Settings(engine=engine, request_timeout_s=0.5))
    with running(app) as url:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            _client(url).chat.completions.create(model="best", messages=HI, max_tokens=1000)
        assert err.value.status_code == 504 and err.value.body["code"] == "timeout"
        assert time.monotonic() - started < 5
        assert _wait(lambda: app.state.worker.cancelled == 1)
        assert engine.produced and engine.produced[-1] < 1000
        # streaming: the headers are sent, so the cap arrives as an error event inside the stream
        with pytest.raises(openai.APIError, match="no complete answer"):
            list(_client(url).chat.completions.create(model="best", messages=HI, max_tokens=1000, stream=True))
        assert _wait(lambda: app.state.worker.cancelled == 2)


def test_non_streaming_disconnect_cancels_the_generation(tokenizer):
    engine = ScriptedEngine(tokenizer, ["best"], delay=0.02, endless=True)
    app = create_app(Settings(engine=engine))
    with running(app) as url:
        body = {"model": "best", "max_tokens": 1000, "messages": HI}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.4))
        assert _wait(lambda: app.state.worker.cancelled == 1)
        assert engine.lock.acquire(timeout=5)
        engine.lock.release()
        assert engine.produced[-1] < 200  # stopped long before 1000 tokens x 0.02 s


def test_full_queue_answers_429_not_5xx(tokenizer):
    engine = ScriptedEngine(tokenizer, ["best"], delay=0.05)
    app = create_app(Settings(engine=engine, max_waiting=2))
    with running(app) as url:

        def ask(_):
            try:
                _client(url).chat.completions.create(model="best", messages=HI, max_tokens=8)
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(ask, range(6)))
    assert 429 in codes and 200 in codes
    assert set(codes) <= {200, 429}


def test_queued_requests_are_answered_in_turn(tokenizer):
    engine = ScriptedEngine(tokenizer, ["a", "b"], delay=0.005)
    app = create_app(Settings(engine=engine))
    with running(app) as url:

        def ask(i):
            model = "a" if i % 2 else "b"
            return model, _client(url).chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"q{i}"}]
            ).choices[0].message.content

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(16)))
    assert [text for _, text in answers] == [f"{m} answers: q{i}" for i, (m, _) in enumerate(answers)]
