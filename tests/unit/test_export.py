"""`qatune export`: the merged folder loads with transformers alone and answers like the adapter; the model
card describes data and evaluation with user text escaped; unsafe targets and names are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adapter_runs import QUESTIONS, make_run
from qatune.config import load_for_run
from qatune.console import QatuneError
from qatune.export import MARKER, export
from qatune.generate import load_engine
from qatune.prompts import messages_for

TOKENS = 12
CARD_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "main_run"
PLANTED = "<script>alert(1)</script> | </td><img src=x onerror=alert(2)>"

# Runs in a fresh interpreter where importing peft or qatune fails: the folder must not need them.
_PLAIN = """
import json, sys
sys.modules["peft"] = None
sys.modules["qatune"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, questions, tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
answers = []
for q in questions:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
print(json.dumps({"answers": answers, "dtype": str(model.dtype), "peft": "peft" in str(type(model))}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    run = make_run(tmp_path_factory.mktemp("export") / "run", tiny_model_dir)
    report = json.loads((run / "data" / "report.json").read_text())
    report["warnings"] = [PLANTED]
    report["source"]["sheet"] = "<b>Sheet|1</b>"
    report["dropped"].append({"row": 9, "reason": "**bold** _answer_ [link](javascript:x)"})
    (run / "data" / "report.json").write_text(json.dumps(report))
    scores = {
        "name": "test",
        "n": 5,
        "metrics": ["rouge1", "bleu"],
        "models": {
            "base": {"rouge1": {"mean": 0.14, "ci95": [0.1, 0.2]}, "bleu": {"mean": 0.01}},
            "epoch-1": {"rouge1": {"mean": 0.45, "ci95": [0.3, 0.6]}, "bleu": {"mean": 0.14}},
        },
        "kinds": {"base": "base", "epoch-1": "fine-tuned"},
    }
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "scores.json").write_text(json.dumps(scores))
    return run


def test_export_loads_with_plain_transformers_and_answers_like_the_adapter(run, tmp_path):
    out = export(run, "epoch-1", tmp_path / "merged", dtype="fp32")
    assert out == (tmp_path / "merged").resolve()
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names and "README.md" in names
    assert "chat_template.jinja" in names or "chat_template" in (out / "tokenizer_config.json").read_text()
    assert not any(n.startswith("adapter_") or n.endswith((".bin", ".pt")) for n in names)
    engine = load_engine(run, load_for_run(run, None, {}, save=False), names=["epoch-1"])
    expected = [
        engine.generate("epoch-1", [messages_for(q)], max_new_tokens=TOKENS, batch_size=1)[0].text for q in QUESTIONS
    ]
    base = [engine.generate("base", [messages_for(q)], max_new_tokens=TOKENS)[0].text for q in QUESTIONS]
    assert expected != base  # the merge is observable
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(out), json.dumps(QUESTIONS), str(TOKENS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["answers"] == expected
    assert result["dtype"] == "torch.float32" and not result["peft"]


def test_bf16_export_and_model_card_escape_user_data(run, tmp_path):
    from safetensors import safe_open

    out = export(run, "epoch-2", tmp_path / "card", dtype="bf16")
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(k).dtype) for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {"torch.bfloat16"}
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    for raw in ("<script>", "<img", "</td>", "<b>", "**bold**", "[link](javascript"):
        assert raw not in card
    assert "&lt;script&gt;" in card and "&lt;b&gt;Sheet\\|1&lt;/b&gt;" in card
    assert "valid question/answer pairs: 48" in card and "QA\\_pair.xlsx" in card
    assert "/data/" not in card  # the local path of the spreadsheet stays private
    assert "0.45" in card and "epoch-1" in card  # the eval table
    assert "--format gguf" in card and "convert_hf_to_gguf" not in card  # qatune writes the GGUF itself
    assert json.loads((out / MARKER).read_text())["model"] == "epoch-2"


def test_export_replaces_an_earlier_export_whole(run, tmp_path):
    out = export(run, "epoch-1", tmp_path / "again", dtype="fp16")
    (out / "stale.txt").write_text("old")
    export(run, "epoch-2", out, dtype="fp16")
    assert not (out / "stale.txt").exists()
    assert json.loads((out / MARKER).read_text())["model"] == "epoch-2"


def test_a_grounded_run_exports_its_index_and_the_card_says_how_to_use_it(run, tmp_path):
    import shutil

    from qatune.rag.index import Index, load_index
    from qatune.rundir import RunDir

    index_dir = RunDir(run).index_dir
    Index([{"id": "p1", "question": "Q?", "answer": "A."}], np.ones((1, 4), dtype=np.float32)).save(index_dir, k=2)
    try:
        out = export(run, "epoch-1+rag", tmp_path / "grounded", dtype="fp16")
        assert load_index(out / "index").pairs == [{"id": "p1", "question": "Q?", "answer": "A."}]
        card = (out / "README.md").read_text()
        assert "## Grounded answers" in card and "take the top 2 pairs" in card and "[:2]" in card
        assert json.loads((out / MARKER).read_text())["model"] == "epoch-1"  # one set of weights, both ways
    finally:
        shutil.rmtree(index_dir)


@pytest.mark.parametrize(
    "name, match",
    [("../epoch-1", "invalid model name"), ("epoch-7", "no model 'epoch-7'"), ("base", "no adapter to merge")],
)
def test_bad_model_names_are_refused(run, tmp_path, name, match):
    with pytest.raises(QatuneError, match=match):
        export(run, name, tmp_path / "x", dtype="fp32")


def test_unsafe_targets_are_refused(run, tmp_path):
    with pytest.raises(QatuneError, match="inside the run's models/"):
        export(run, "epoch-1", run / "models" / "merged", dtype="fp32")
    with pytest.raises(QatuneError, match="replace the run directory"):
        export(run, "epoch-1", run, dtype="fp32")
    with pytest.raises(QatuneError, match="replace the run directory"):
        export(run, "epoch-1", run.parent, dtype="fp32")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(QatuneError, match="other files"):
        export(run, "epoch-1", busy, dtype="fp32")
    assert (busy / "notes.txt").read_text() == "keep me"
    with pytest.raises(QatuneError, match="--dtype"):
        export(run, "epoch-1", tmp_path / "y", dtype="int4")
    assert not (run / "models" / "merged").exists()


def _cli_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qatune", "export", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_export_prints_the_folder(run, tmp_path):
    proc = _cli_export("--run", str(run), "--model", "epoch-1", "--out", str(tmp_path / "cli"), "--dtype", "fp16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exported:" in proc.stdout and (tmp_path / "cli" / "model.safetensors").exists()
    proc = _cli_export("--run", str(run), "--model", "nope", "--out", str(tmp_path / "cli2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _card_run(root, model: str, full: bool):
    """A run directory with fixed files (no weights): what the model card reads."""
    import shutil

    import yaml

    from qatune.config import Config
    from qatune.rundir import RunDir

    rundir = RunDir(root)
    settings = Config().model_dump(mode="json")
    settings.update(model=model)
    rundir.root.mkdir(parents=True)
    rundir.config_yaml.write_text(yaml.safe_dump(settings, sort_keys=False))
    if not full:
        return rundir, Config.model_validate(settings)
    reasons = ["empty answer", "**bold** _answer_ [link](javascript:x)", "empty answer"]
    report = {"valid_pairs": 48, "splits": {"train": 38, "val": 5, "test": 5, "train_augmented": 76}}
    report["dropped"] = [{"row": 7 + i, "reason": r} for i, r in enumerate(reasons)]
    report["warnings"] = ["<script>alert(1)</script> | </td>"]
    report["source"] = {"path": "/data/QA_pair.xlsx", "sha256": "ab" * 32, "sheet": "<b>Sheet|1</b>"}
    report["source"].update(question_col="Question", answer_col="Answer", header_row=1)
    rundir.data_dir.mkdir()
    rundir.data_report_json.write_text(json.dumps(report))
    rundir.train_dir.mkdir()
    shutil.copy(CARD_FIXTURES / "summary.json", rundir.train_summary_json)  # written by the previous version
    for name in ("epoch-1", "epoch-2", "best"):
        rundir.model_dir(name).mkdir(parents=True)
        adapter = {"r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}
        (rundir.model_dir(name) / "adapter_config.json").write_text(json.dumps(adapter))
    scores = {"name": "test", "n": 5, "metrics": ["rouge1", "rougeL", "bleu"], "models": {}}
    for model_name, r1, r1_ci, rl, rl_ci, bleu in (
        ("base", 0.14, [0.1, 0.2], 0.12, [0.1, 0.2], 0.01),
        ("retrieval", 0.5, [0.3, 0.6], 0.48, [0.3, 0.6], 0.2),
        ("epoch-1", 0.45, [0.3, 0.6], 0.41, [0.3, 0.6], 0.14),
        ("best", 0.55, [0.4, 0.7], 0.51, [0.4, 0.6], 0.24),
    ):
        entry = {"rouge1": {"mean": r1, "ci95": r1_ci}, "rougeL": {"mean": rl, "ci95": rl_ci}, "bleu": {"mean": bleu}}
        scores["models"][model_name] = entry
    scores["comparisons"] = {
        "epoch-1": {"rougeL": {"diff": 0.29, "ci95": [0.1, 0.4], "p": 0.01}},
        "best": {"rougeL": {"diff": 0.39, "ci95": [0.2, 0.5], "p": 0.001}},
    }
    scores["kinds"] = {"base": "base", "retrieval": "baseline", "epoch-1": "fine-tuned", "best": "fine-tuned"}
    rundir.eval_dir("test").mkdir(parents=True)
    rundir.eval_scores("test").write_text(json.dumps(scores))
    rundir.index_dir.mkdir()
    (rundir.index_dir / "index.json").write_text(json.dumps({"format": 1, "k": 3}))
    return rundir, Config.model_validate(settings)


@pytest.mark.parametrize(
    "fixture, model, full, name, weights, folder, gguf",
    [
        ("card_full.txt", "org/tiny-chat", True, "best", "bf16", "my-export", False),
        ("card_gguf.txt", "org/tiny-chat", True, "best", "q8_0", "my-gguf", True),
        ("card_bare.txt", "default", False, "epoch-1", "fp32", "plain", False),
    ],
)
def test_the_model_card_is_the_one_the_previous_version_wrote(
    tmp_path, fixture, model, full, name, weights, folder, gguf
):
    """tests/fixtures/main_run/card_*.txt: cards written by the previous version from these run files."""
    from qatune import __version__
    from qatune.portable.card import Exported, model_card

    rundir, config = _card_run(tmp_path / ("course-run" if full else "bare"), model, full)
    expected = (CARD_FIXTURES / fixture).read_text(encoding="utf-8").replace("@VERSION@", __version__)
    assert model_card(Exported(rundir, name, config, folder, weights, gguf=gguf)) == expected


def test_the_card_falls_back_to_scores_json_as_the_previous_version_did(tmp_path, monkeypatch):
    """When the report's tables cannot be built, the card lists each eval set's means from scores.json."""
    from qatune import __version__
    from qatune.portable.card import Exported, model_card
    from qatune.report import tables

    def damaged(run):
        raise RuntimeError("damaged")

    monkeypatch.setattr(tables, "results_markdown", damaged)
    rundir, config = _card_run(tmp_path / "course-run", "org/tiny-chat", True)
    scores = json.loads(rundir.eval_scores("test").read_text())
    scores["name"], scores["n"], scores["metrics"] = "unseen", 3, ["rougeL", "semantic", 7]
    scores["models"]["epoch-1"]["rougeL"]["mean"] = True
    rundir.eval_dir("unseen").mkdir()
    rundir.eval_scores("unseen").write_text(json.dumps(scores))
    expected = (CARD_FIXTURES / "card_fallback.txt").read_text(encoding="utf-8").replace("@VERSION@", __version__)
    assert model_card(Exported(rundir, "epoch-2", config, "fb", "fp16")) == expected
