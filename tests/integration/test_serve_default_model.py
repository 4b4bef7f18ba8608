"""Batched serving of the real default model (SmolLM2-135M, fp32) with two adapters over real HTTP: the
`openai` client's concurrent requests for base and both adapters, streamed or not, get the answers each gets
alone, while one streamed request is cancelled by its client mid-answer."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import openai
import pytest

from adapter_runs import QUESTIONS, run_engine
from qatune.models.resolve import resolve_model
from qatune.prompts import messages_for
from qatune.serve.app import Settings, create_app
from serve_harness import running

pytestmark = pytest.mark.slow
TOKENS = 16
MODELS = ["base", "epoch-1", "epoch-2"]


def test_default_model_batched_answers_equal_one_at_a_time_and_a_client_cancels(tmp_path):
    engine = run_engine(tmp_path / "run", resolve_model("default"))
    jobs = [(MODELS[i % 3], QUESTIONS[i % 4], i % 2 == 0) for i in range(9)]
    expected = {
        (m, q): engine.generate(m, [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0].text for m, q, _ in jobs
    }
    assert len({expected[(m, QUESTIONS[0])] for m in MODELS if (m, QUESTIONS[0]) in expected}) > 1
    app = create_app(Settings(engine=engine))
    with running(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        essay = "Write a long essay on the history of machine learning, with many examples."
        leaving = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": essay}], max_tokens=400, stream=True
        )
        next(iter(leaving))
        gate = threading.Barrier(len(jobs))

        def ask(job):
            model, question, stream = job
            kwargs = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": TOKENS}
            gate.wait()
            if stream:
                chunks = client.chat.completions.create(stream=True, **kwargs)
                return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return client.chat.completions.create(**kwargs).choices[0].message.content

        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(ask, jobs))
        leaving.close()
        deadline = time.monotonic() + 60
        while app.state.worker.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.worker.cancelled == 1 and not app.state.worker.busy
    assert answers == [expected[(m, q)] for m, q, _ in jobs]
