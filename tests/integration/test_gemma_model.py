"""The embedded Gemma 3 270M (`--model gemma3-270m`): assembled from its chunk packages, checked by sha256,
converted once from Q4_K_M, given the fallback template (a base model, no chat template), then the whole
`qatune run` loop on a few pairs for one epoch. Skipped when the packages are not installed."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qatune.models.embedded import GEMMA3_270M

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(p) is None for p in GEMMA3_270M.packages),
        reason=f"gemma3-270m packages not installed ({GEMMA3_270M.install})",
    ),
]

PAIRS = [
    ("Who teaches DSC 310?", "Professor Maya Lindqvist teaches DSC 310."),
    ("When is the DSC 310 lecture?", "Lectures are on Tuesdays and Thursdays at 9:30."),
    ("Where is the DSC 310 lecture?", "Lectures are in Hall B, room 204."),
    ("Is there a final exam in DSC 310?", "No, a final project replaces the exam."),
    ("How many homework sets does DSC 310 have?", "DSC 310 has six homework sets."),
    ("What language does DSC 310 use?", "DSC 310 uses Python 3.12."),
]


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer"])
        writer.writerows(rows)
    return path


def test_gemma_is_assembled_converted_and_prompted_with_bos():
    from qatune.models.load import load_tokenizer
    from qatune.models.resolve import resolve_model
    from qatune.prompts import encode_pair, messages_for, prompt_ids, stop_token_ids

    path = Path(resolve_model("gemma3-270m"))
    assert path.name == GEMMA3_270M.cache_name and str(path).startswith(os.environ["QATUNE_HOME"])
    assert json.loads((path / "qatune_source.json").read_text())["sha256"] == GEMMA3_270M.sha256
    assert json.loads((path / "config.json").read_text())["model_type"] == "gemma3_text"
    assert not list((path.parent.parent / "gguf").glob("*.gguf"))  # the assembled GGUF is not kept
    assert Path(resolve_model("gemma3-270m")) == path  # cached

    tok = load_tokenizer(str(path))
    assert not tok.chat_template  # the base model ships none: qatune's fallback is used
    prompt = prompt_ids(tok, messages_for("Who teaches DSC 310?"))
    assert prompt[0] == tok.bos_token_id  # Gemma without BOS first answers with EOS or repeats the header
    enc = encode_pair(tok, *PAIRS[0], max_length=256)
    assert enc.input_ids[-1] == tok.eos_token_id == enc.labels[-1]
    assert stop_token_ids(tok)[0] == tok.eos_token_id


def test_the_whole_loop_on_a_few_pairs(tmp_path):
    data = _write_csv(tmp_path / "faq.csv", PAIRS)
    test = _write_csv(tmp_path / "test.csv", [("Who is the DSC 310 teacher?", PAIRS[0][1]), PAIRS[5]])
    run = tmp_path / "run"
    args = ["run", str(data), "--test", str(test), "--out", str(run), "--model", "gemma3-270m", "--epochs", "1"]
    args += ["--augment", "0", "--no-grounded", "--max-new-tokens", "32", "--quiet"]
    result = subprocess.run([sys.executable, "-m", "qatune", *args], capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "report" / "report.html").is_file()
    assert (run / "models" / "best" / "adapter_model.safetensors").is_file()
    assert "{{ bos_token }}" in (run / "models" / "best" / "chat_template.jinja").read_text()
    rows = [json.loads(line) for line in (run / "eval" / "test" / "generations.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} >= {"base", "best"}
    assert all(r["answer"].strip() for r in rows if r["model"] == "base")  # with BOS the base model answers
    _check_gguf_export(run, [r["question"] for r in rows if r["model"] == "best"], tmp_path)


def _check_gguf_export(run: Path, questions: list[str], tmp_path: Path) -> None:
    """The GGUF of `best` (Gemma 3, SentencePiece-style tokenizer) in llama.cpp: qatune's prompt ids, and the
    engine's fp32 answers except where the two best tokens nearly tie."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("QATUNE_REQUIRE_LLAMACPP") == "1":
            raise
        return
    from qatune.config import load_for_run
    from qatune.generate import load_engine
    from qatune.portable.agreement import first_gap
    from qatune.prompts import messages_for, prompt_ids
    from qatune.rag.ask import GGUFModel

    out = tmp_path / "gguf"
    args = ["export", "--run", str(run), "--model", "best", "--format", "gguf", "--out", str(out)]
    result = subprocess.run([sys.executable, "-m", "qatune", *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    engine = load_engine(run, load_for_run(run, None, {"train": {"precision": "fp32"}}, save=False), names=["best"])
    model = GGUFModel(out / "model.gguf")
    for question in questions:
        messages = messages_for(question)
        assert model.prompt(messages) == prompt_ids(engine.tokenizer, messages)
        want = engine.generate("best", [messages], max_new_tokens=32, batch_size=1)[0].text
        got = model.answer(messages, 32)
        if want != got:
            assert first_gap(engine, "best", messages, want, got)[1] < 0.1, (question, want, got)
