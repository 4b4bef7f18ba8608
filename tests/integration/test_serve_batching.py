"""Batched serving over real HTTP with the `openai` client: concurrent requests for base and two adapters
share decoding steps and each gets the answer it gets alone; a client that leaves or a request that times out
drops out of its batch while the others go on; a precheck can answer without generation; seeded sampling
repeats; `max_batch=1` answers one request at a time."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import openai
import pytest

from adapter_runs import run_engine
from qatune.generate.batch import DecodeBatch
from qatune.models.load import load_tokenizer
from qatune.prompts import messages_for
from qatune.serve.app import Settings, create_app
from serve_harness import ScriptedEngine, running

TOKENS = 40
QUESTIONS = [
    "Who is the instructor?",
    "When?",
    "How is the grade computed in this course, and when is the final project due?",
    "What is the title of this course?",
    "Is there a final exam, or only a project and homework?",
]
MODELS = ["base", "epoch-1", "epoch-2"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, lively_model_dir):
    return run_engine(tmp_path_factory.mktemp("batching") / "run", lively_model_dir)


@pytest.fixture(scope="module")
def expected(engine):
    """Each model's greedy answer to each question, one conversation at a time through eval's path."""
    return {
        (m, q): engine.generate(m, [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0].text
        for m in MODELS
        for q in QUESTIONS
    }


class _Recorder:
    """Stands in for `engine.new_batch` and records the adapters of the rows in every step."""

    def __init__(self, engine, mixed: bool = True):
        self.engine, self.mixed, self.steps = engine, mixed, []

    def __call__(self) -> DecodeBatch:
        batch = DecodeBatch(self.engine)
        batch.mixed = batch.mixed and self.mixed
        step = batch.step

        def recorded() -> None:
            self.steps.append([r.adapter for r in batch.rows])
            step()

        batch.step = recorded  # type: ignore[method-assign]
        return batch


def _client(url: str, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)


def _ask(url: str, model: str, question: str, stream: bool, **extra) -> str:
    kwargs = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": TOKENS, **extra}
    if stream:
        chunks = _client(url).chat.completions.create(stream=True, **kwargs)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return _client(url).chat.completions.create(**kwargs).choices[0].message.content


def _together(calls: list) -> list:
    """Start every call at the same moment, each on its own thread; their results in order."""
    gate = threading.Barrier(len(calls))

    def run(call):
        gate.wait()
        return call()

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("mixed", [True, False])
def test_concurrent_requests_share_steps_and_answer_as_alone(engine, expected, monkeypatch, mixed):
    """Mixed: one pass holds rows of base and both adapters. Not mixed (adapters that peft cannot mix in a
    pass): each step holds one adapter. Either way each answer equals the one-at-a-time greedy answer."""
    recorder = _Recorder(engine, mixed)
    monkeypatch.setattr(engine, "new_batch", recorder)
    jobs = [(MODELS[i % 3], QUESTIONS[i % 5], i % 3 == 1) for i in range(15)]
    with running(create_app(Settings(engine=engine))) as url:
        answers = _together([lambda j=j: _ask(url, *j, temperature=0) for j in jobs])
    assert answers == [expected[(m, q)] for m, q, _ in jobs]
    assert max(len(s) for s in recorder.steps) > 1, "requests must have been decoded together"
    assert any(len(set(s)) > 1 for s in recorder.steps) == mixed


class _SamePairs:
    """Stands in for the run's retriever: the same two training pairs for every question."""

    def contexts(self, questions: list[str]) -> list[list[dict]]:
        pairs = [{"question": "Who teaches?", "answer": "Ada Lovelace."}, {"question": "Room?", "answer": "101."}]
        return [pairs for _ in questions]


def test_grounded_requests_join_the_batch_with_their_retrieved_pairs(engine, monkeypatch):
    monkeypatch.setattr(engine, "retriever", _SamePairs())
    jobs = [("epoch-1+rag" if i % 2 else "epoch-1", QUESTIONS[i % 5], i % 3 == 0) for i in range(8)]
    expected = {
        (m, q): engine.generate(m, [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0].text for m, q, _ in jobs
    }
    assert expected[("epoch-1+rag", QUESTIONS[1])] != expected[("epoch-1", QUESTIONS[1])]
    with running(create_app(Settings(engine=engine))) as url:
        answers = _together([lambda j=j: _ask(url, *j) for j in jobs])
    assert answers == [expected[(m, q)] for m, q, _ in jobs]


def test_a_client_that_leaves_drops_out_and_the_others_go_on(engine, expected, monkeypatch):
    recorder = _Recorder(engine)
    monkeypatch.setattr(engine, "new_batch", recorder)
    app = create_app(Settings(engine=engine))
    with running(app) as url:
        stream = _client(url).chat.completions.create(
            model="epoch-1", messages=[{"role": "user", "content": QUESTIONS[2]}], max_tokens=400, stream=True
        )
        next(iter(stream))  # the role chunk: the request has joined the batch
        others = [("epoch-2", QUESTIONS[0], False), ("base", QUESTIONS[3], True)]
        answers = _together([lambda j=j: _ask(url, *j) for j in others])
        stream.close()  # the client goes away mid-answer
        worker = app.state.worker
        deadline = time.monotonic() + 10
        while worker.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.cancelled == 1 and not worker.busy
        assert answers == [expected[(m, q)] for m, q, _ in others]
        assert any(set(s) == set(MODELS) for s in recorder.steps), "the leaving request shared steps"
        assert _ask(url, "epoch-1", QUESTIONS[1], True) == expected[("epoch-1", QUESTIONS[1])]


def test_seeded_sampling_repeats_whatever_else_is_in_the_batch(engine, expected):
    sampled = {"temperature": 1.0, "top_p": 0.9}
    with running(create_app(Settings(engine=engine))) as url:
        alone = _ask(url, "epoch-2", QUESTIONS[0], False, seed=11, **sampled)
        results = _together(
            [
                lambda: _ask(url, "epoch-2", QUESTIONS[0], True, seed=11, **sampled),
                lambda: _ask(url, "epoch-2", QUESTIONS[0], False, seed=12, **sampled),
                lambda: _ask(url, "epoch-1", QUESTIONS[4], False, temperature=0),
            ]
        )
    assert results[0] == alone
    assert results[1] != alone, "another seed draws another answer"
    assert results[2] == expected[("epoch-1", QUESTIONS[4])]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_a_timed_out_request_leaves_its_batch_and_the_others_are_answered(tokenizer):
    engine = ScriptedEngine(tokenizer, ["best"], answers={("best", "long"): "word " * 400}, delay=0.01)
    app = create_app(Settings(engine=engine, request_timeout_s=1.5))
    with running(app) as url:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(_ask, url, "best", "long", False, max_tokens=1000)
            time.sleep(0.2)
            short = [_ask(url, "best", f"q{i}", i % 2 == 0) for i in range(4)]
            with pytest.raises(openai.APIStatusError) as err:
                slow.result()
        assert err.value.status_code == 504
        deadline = time.monotonic() + 5
        while app.state.worker.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.worker.cancelled == 1 and not app.state.worker.busy
        assert _ask(url, "best", "after", False) == "best answers: after"
    assert short == [f"best answers: q{i}" for i in range(4)]
    assert 2 in engine.batches, "the short requests joined the long one's steps"
    assert engine.produced[0] < 400


@pytest.mark.parametrize("max_batch", [1, 16])
def test_max_batch_bounds_the_rows_per_step(tokenizer, max_batch):
    engine = ScriptedEngine(tokenizer, ["a", "b"], delay=0.01)
    jobs = [("a" if i % 2 else "b", f"question {i}", i % 3 == 0) for i in range(8)]
    with running(create_app(Settings(engine=engine, max_batch=max_batch))) as url:
        answers = _together([lambda j=j: _ask(url, *j) for j in jobs])
    assert answers == [f"{m} answers: {q}" for m, q, _ in jobs]
    assert max(engine.batches) == 1 if max_batch == 1 else max(engine.batches) > 1


def test_a_precheck_answers_without_generation(tokenizer):
    def precheck(job) -> str | None:
        return "I don't know." if "unknown" in job.messages[-1]["content"] else None

    engine = ScriptedEngine(tokenizer, ["best"])
    with running(create_app(Settings(engine=engine, precheck=precheck))) as url:
        reply = _client(url).chat.completions.create(
            model="best", messages=[{"role": "user", "content": "an unknown fact?"}]
        )
        streamed = _ask(url, "best", "another unknown?", True)
        assert engine.batches == [], "nothing was generated"
        generated = _ask(url, "best", "known?", False)
    assert reply.choices[0].message.content == "I don't know." == streamed
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    assert generated == "best answers: known?"


def test_a_failing_pass_is_a_500_and_the_server_goes_on(tokenizer):
    engine = ScriptedEngine(tokenizer, ["best"], answers={("best", "boom"): RuntimeError("out of memory")})
    with running(create_app(Settings(engine=engine))) as url:
        with pytest.raises(openai.InternalServerError) as err:
            _ask(url, "best", "boom", False)
        assert err.value.body["code"] == "generation_failed"
        assert _ask(url, "best", "fine?", True) == "best answers: fine?"
