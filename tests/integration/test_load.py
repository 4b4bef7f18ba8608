"""A bounded loopback load test (benchmarks/serve_load.py for 20 s): 16 clients alternating adapters, some
streaming, some malformed, some without the key: no 5xx, no wrong-adapter answer, nothing answered without
the key, memory flat."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import psutil
import pytest

from adapter_runs import QUESTIONS, make_run
from qatune.config import load_for_run
from qatune.generate import load_engine
from qatune.serve.app import Settings, create_app
from serve_harness import running

pytestmark = pytest.mark.slow
KEY = "load-key"
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_sixteen_clients_for_twenty_seconds(tmp_path, tiny_model_dir):
    bench = _bench()
    run = make_run(tmp_path / "run", tiny_model_dir)
    engine = load_engine(run, load_for_run(run, None, {}, save=False))
    me = psutil.Process()
    with running(create_app(Settings(run=run, engine=engine, api_key=KEY))) as url:
        expected = bench.expected_answers(url, engine.names, QUESTIONS, 16, KEY)
        assert all(len({expected[(m, q)] for m in engine.names}) == 3 for q in QUESTIONS)  # detectable
        bench.run_load(url, engine.names, QUESTIONS, expected, clients=16, duration_s=3, api_key=KEY)  # warm-up
        result = bench.run_load(
            url,
            engine.names,
            QUESTIONS,
            expected,
            clients=16,
            duration_s=20,
            api_key=KEY,
            rss=lambda: me.memory_info().rss / 2**20,
        )
    summary = result.summary()
    print(summary)
    assert summary["errors_5xx"] == 0 and result.unexpected == []
    assert summary["wrong_answers"] == 0
    assert summary["answered"] >= 40 and summary["rejected_as_expected"] >= 10
    assert summary["rss_end_mb"] - summary["rss_start_mb"] < 150
