"""The OpenAI-compatible API over real HTTP on loopback, driven by the official `openai` client, on a run
with two adapters of the tiny model: answers equal the engine's greedy answers, streamed or not."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from adapter_runs import QUESTIONS, make_run
from qatune.config import load_for_run
from qatune.generate import load_engine
from qatune.prompts import messages_for
from qatune.serve.app import Settings, create_app
from serve_harness import running

TOKENS = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory, lively_model_dir):
    return make_run(tmp_path_factory.mktemp("serve") / "run", lively_model_dir)


@pytest.fixture(scope="module")
def engine(run):
    return load_engine(run, load_for_run(run, None, {}, save=False))


@pytest.fixture(scope="module")
def expected(run, engine):
    """Greedy answers per model and question, each model from an engine holding only that model: the served
    engine switches between adapters, these never do."""
    answers = {}
    for name in engine.names:
        alone = load_engine(run, load_for_run(run, None, {}, save=False), [name])
        answers.update(
            {(name, q): alone.generate(name, [messages_for(q)], max_new_tokens=TOKENS)[0].text for q in QUESTIONS}
        )
    assert len({answers[(name, QUESTIONS[0])] for name in engine.names}) == len(engine.names)
    return answers


@pytest.fixture(scope="module")
def server(engine):
    app = create_app(Settings(engine=engine, max_body_bytes=200_000))
    with running(app) as url:
        yield url, app


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_model_list_names_base_and_each_adapter(server):
    url, _ = server
    models = _client(url).models.list()
    assert [m.id for m in models.data] == ["base", "epoch-1", "epoch-2"]
    assert all(m.object == "model" for m in models.data)
    assert _client(url).models.retrieve("epoch-2").id == "epoch-2"


def test_completion_equals_engine_greedy_answer(server, expected):
    url, _ = server
    q = QUESTIONS[0]
    reply = _client(url).chat.completions.create(
        model="epoch-1", messages=[{"role": "user", "content": q}], max_tokens=TOKENS, temperature=0
    )
    assert reply.object == "chat.completion" and reply.model == "epoch-1"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected[("epoch-1", q)]
    assert reply.choices[0].finish_reason == "length"  # the random tiny model never ends on its own
    assert reply.usage.completion_tokens == TOKENS and reply.usage.prompt_tokens > 5


def test_each_request_gets_its_own_model_whatever_ran_before(server, expected):
    url, _ = server
    q = QUESTIONS[3]
    for name in ("epoch-2", "base", "epoch-1", "epoch-1", "base", "epoch-2"):
        reply = _client(url).chat.completions.create(
            model=name, messages=[{"role": "user", "content": q}], max_tokens=TOKENS, temperature=0
        )
        assert reply.choices[0].message.content == expected[(name, q)], name


def test_streamed_chunks_concatenate_to_the_answer(server, expected):
    url, _ = server
    q = QUESTIONS[2]
    stream = _client(url).chat.completions.create(
        model="epoch-2",
        messages=[{"role": "user", "content": q}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected[("epoch-2", q)]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS


def test_raw_stream_ends_with_done(server):
    url, _ = server
    body = {"model": "base", "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_stop_string_cuts_the_answer(server, expected):
    url, _ = server
    q = QUESTIONS[1]
    full = expected[("epoch-2", q)]
    stop = full[4:6]
    reply = _client(url).chat.completions.create(
        model="epoch-2", messages=[{"role": "user", "content": q}], max_tokens=TOKENS, temperature=0, stop=[stop]
    )
    assert reply.choices[0].message.content == full[: full.index(stop)].strip()
    assert reply.choices[0].finish_reason == "stop"


def test_unknown_model_is_404(server):
    url, _ = server
    with pytest.raises(openai.NotFoundError) as err:
        _client(url).chat.completions.create(model="epoch-9", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        _client(url).models.retrieve("../etc")


@pytest.mark.parametrize("payload", [b"{not json", b'{"model": "base", "messages": [', b"\xff\xfe", b""])
def test_malformed_json_is_400_with_openai_error_body(server, payload):
    url, _ = server
    response = httpx.post(
        f"{url}/v1/chat/completions", content=payload, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code in (400, 422)
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "base"}, "messages"),
        ({"model": "base", "messages": []}, "messages"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"model": "base", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ],
)
def test_invalid_fields_name_the_parameter(server, body, param):
    url, _ = server
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_max_tokens_over_the_cap_is_refused(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as err:
        _client(url).chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=5000
        )
    assert "cap" in err.value.message


def test_prompt_longer_than_the_context_is_refused(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as err:
        _client(url).chat.completions.create(
            model="base", max_tokens=8, messages=[{"role": "user", "content": "word " * 2000}]
        )
    assert err.value.body["code"] == "context_length_exceeded"


def test_body_over_the_cap_is_413(server):
    url, _ = server
    big = {"model": "base", "messages": [{"role": "user", "content": "x" * 300_000}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=big, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"

    def chunked():
        yield b'{"model": "base", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}]}'

    response = httpx.post(f"{url}/v1/chat/completions", content=chunked(), timeout=30)
    assert response.status_code == 413


def test_foreign_host_header_is_refused(server):
    url, _ = server
    response = httpx.get(f"{url}/v1/models", headers={"Host": "attacker.example"}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


def test_concurrent_clients_on_two_adapters_get_sequential_answers(server, expected):
    url, _ = server
    jobs = [("epoch-1" if i % 2 else "epoch-2", QUESTIONS[i % len(QUESTIONS)], i % 3 == 0) for i in range(16)]

    def ask(job):
        model, q, stream = job
        client = _client(url)
        kwargs = dict(model=model, messages=[{"role": "user", "content": q}], max_tokens=TOKENS, temperature=0)
        if stream:
            return "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(stream=True, **kwargs)
                if c.choices
            )
        return client.chat.completions.create(**kwargs).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, jobs))
    assert answers == [expected[(m, q)] for m, q, _ in jobs]
    assert expected[("epoch-1", QUESTIONS[0])] != expected[("epoch-2", QUESTIONS[0])]


def test_client_disconnect_cancels_the_generation(server, engine):
    url, app = server
    worker = app.state.worker
    before = worker.cancelled
    body = {
        "model": "epoch-1",
        "stream": True,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": QUESTIONS[0]}],
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # generation has started (the role chunk); leave mid-answer
    deadline = time.monotonic() + 10
    while worker.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.cancelled == before + 1
    assert engine.lock.acquire(timeout=5)
    engine.lock.release()
    assert not worker.busy
