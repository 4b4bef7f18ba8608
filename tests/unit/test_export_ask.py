"""The export folder's ask.py: without qatune, it retrieves with the saved index and answers the grounded prompt
as `qatune serve` answers `NAME+rag` (the same tokens from a transformers export; from the GGUF in llama.cpp, the
same except where the model's two best tokens nearly tie)."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest
import yaml

from adapter_runs import QUESTIONS, make_run
from qatune.config import load_for_run
from qatune.export import export
from qatune.generate import load_engine
from qatune.portable.agreement import first_gap
from qatune.prompts import messages_for
from qatune.rundir import RunDir
from qatune.serve.app import Settings, create_app
from qatune.storage import write_jsonl
from serve_harness import running

TOKENS = 12
PAIRS = [
    ("Who teaches the course?", "Professor Ada Lovelace teaches it."),
    ("How is the grade computed?", "Homework 40%, midterm 20%, final project 40%."),
    ("What is the course title?", "Deep Learning."),
    ("When is the final project due?", "On the last Friday of term."),
    ("Where are the lectures held?", "In Room 101."),
]
# ask.py in a fresh interpreter where importing qatune fails: the script stands alone.
_ASK = """
import runpy, sys
sys.modules["qatune"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, lively_model_dir):
    from qatune.rag.embeddings import load_embedder
    from qatune.rag.index import run_index

    run = make_run(tmp_path_factory.mktemp("ask") / "run", lively_model_dir)
    rundir = RunDir(run)
    rows = [{"id": f"p{i}", "question": q, "answer": a} for i, (q, a) in enumerate(PAIRS)]
    write_jsonl(rundir.split_file("train"), rows)
    run_index(rundir, load_embedder(), k=2)
    return run


@pytest.fixture(scope="module")
def served(run):
    """best+rag's answers from `qatune serve` through the openai client."""
    engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])
    with running(create_app(Settings(run=run, engine=engine))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        return [
            client.chat.completions.create(
                model="epoch-1+rag",
                messages=[{"role": "user", "content": q}],
                max_tokens=TOKENS,
                temperature=0,
            )
            .choices[0]
            .message.content
            for q in QUESTIONS
        ]


def _ask(folder, *flags: str) -> list[dict]:
    args = [str(folder / "ask.py"), "--json", "--max-tokens", str(TOKENS), *flags, *QUESTIONS]
    proc = subprocess.run([sys.executable, "-c", _ASK, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _ask_module(folder):
    """The export's ask.py as a module (its functions, not its command line)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("exported_ask", folder / "ask.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ask_py_of_a_transformers_export_answers_as_serve(run, served, tmp_path):
    out = export(run, "epoch-1+rag", tmp_path / "merged", dtype="fp32")
    assert (out / "ask.py").is_file() and (out / "index" / "pairs.jsonl").is_file()
    replies = _ask(out)
    assert [r["answer"] for r in replies] == served
    engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])
    assert [r["retrieved"] for r in replies] == engine.retriever.contexts(QUESTIONS)
    closed = engine.generate("epoch-1", [messages_for(q) for q in QUESTIONS], max_new_tokens=TOKENS, batch_size=1)
    assert [r["answer"] for r in _ask(out, "--closed-book", "--no-checks")] == [g.text for g in closed]
    assert "ask.py" in (out / "README.md").read_text()


def test_ask_py_of_a_gguf_export_answers_as_serve_except_near_ties(run, served, tmp_path, llama_cpp):
    out = export(run, "epoch-1", tmp_path / "gguf", fmt="gguf")
    answers = [r["answer"] for r in _ask(out)]
    engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])
    differ = [i for i, (a, b) in enumerate(zip(served, answers, strict=True)) if a != b]
    for i in differ:
        assert first_gap(engine, "epoch-1+rag", messages_for(QUESTIONS[i]), served[i], answers[i])[1] < 0.05
    assert len(differ) <= 1


def test_a_run_without_an_index_exports_no_ask_script(tmp_path, lively_model_dir):
    bare = make_run(tmp_path / "bare", lively_model_dir, seeds={"epoch-1": 1})
    out = export(bare, "epoch-1", tmp_path / "gguf", fmt="gguf")
    assert not (out / "ask.py").exists() and not (out / "index").exists()


def _choosing(rundir: RunDir, head: int) -> dict:
    """The run's config set to choose grounded answers on `head`-token openings (every answer here is longer)."""
    config = yaml.safe_load(rundir.config_yaml.read_text())
    config["abstain"]["select"] = "on"
    config["train"]["answer_head"] = head
    rundir.config_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def test_a_choosing_run_answers_alike_in_serve_and_ask_py(run, tmp_path):
    """With `abstain.select: on` a grounded answer is a whole retrieved answer: the one the engine chooses (scoring
    openings shorter than every answer), which the server sends through the openai client and the export's ask.py
    picks from the merged weights."""
    rundir = RunDir(run)
    saved = rundir.config_yaml.read_text()
    try:
        config = _choosing(rundir, head=3)
        engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])
        chosen = [g.text for g in engine.generate("epoch-1+rag", [messages_for(q) for q in QUESTIONS])]
        contexts = engine.retriever.contexts(QUESTIONS)
        assert all(text in [p["answer"] for p in ctx] for text, ctx in zip(chosen, contexts, strict=True))
        assert any(text != ctx[0]["answer"] for text, ctx in zip(chosen, contexts, strict=True))  # not just the first
        with running(create_app(Settings(run=run, engine=engine))) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
            served = [
                client.chat.completions.create(
                    model="epoch-1+rag", messages=[{"role": "user", "content": q}], max_tokens=TOKENS, temperature=0
                )
                .choices[0]
                .message.content
                for q in QUESTIONS
            ]
        assert served == chosen
        merged = export(run, "epoch-1+rag", tmp_path / "merged", dtype="fp32")
        guard = json.loads((merged / "guard.json").read_text())
        assert guard["choose"] == {"head": config["train"]["answer_head"]} and guard["context_head"] == 3
        ask = _ask_module(merged)  # its prompts cut retrieved answers as the engine's (and training's) do
        shorten = ask.shortener(ask.HFModel(merged), guard["context_head"])
        for question, ctx in zip(QUESTIONS, contexts, strict=True):
            served_prompt = engine.grounded("epoch-1+rag", [messages_for(question)])[0][-1]["content"]
            assert ask.grounded_question(question, ctx, shorten) == served_prompt and " ..." in served_prompt
        assert [r["answer"] for r in _ask(merged)] == chosen
        assert "chosen, not written" in (merged / "README.md").read_text()
    finally:
        rundir.config_yaml.write_text(saved)


def test_a_choosing_gguf_export_picks_retrieved_answers_in_llama_cpp(run, tmp_path, llama_cpp):
    rundir = RunDir(run)
    saved = rundir.config_yaml.read_text()
    try:
        _choosing(rundir, head=3)
        contexts = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"]).retriever.contexts(
            QUESTIONS
        )
        gguf = export(run, "epoch-1", tmp_path / "gguf", fmt="gguf")
        picked = [r["answer"] for r in _ask(gguf)]  # llama.cpp's scores may tip a near tie the other way
        assert all(text in [p["answer"] for p in ctx] for text, ctx in zip(picked, contexts, strict=True))
    finally:
        rundir.config_yaml.write_text(saved)
