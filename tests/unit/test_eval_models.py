"""Which models an eval scores: base, retrieval and every adapter; with a retrieval index also the grounded
`base+rag` and `best+rag` by default, and any `NAME+rag` on request."""

from __future__ import annotations

import pytest

from qatune.config import load
from qatune.console import QatuneError
from qatune.evaluate.state import model_fingerprints, wanted_models
from qatune.rundir import RunDir
from qatune.storage import write_jsonl


def _run(tmp_path, grounded: bool) -> RunDir:
    rundir = RunDir(tmp_path / "run")
    for name in ("epoch-2", "epoch-3", "best"):
        folder = rundir.model_dir(name)
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(name.encode() if name != "best" else b"epoch-3")
    write_jsonl(rundir.split_file("train"), [{"id": "p1", "question": "Q?", "answer": "A."}])
    if grounded:
        rundir.index_dir.mkdir(parents=True)
        (rundir.index_dir / "index.json").write_text("{}")
        (rundir.index_dir / "vectors.safetensors").write_bytes(b"v1")
    return rundir


def _config(models=None):
    return load(None, {"model": "no-such-org/no-such-model", "eval": {"models": models}})


def test_closed_book_run_scores_base_retrieval_and_every_adapter(tmp_path):
    rundir = _run(tmp_path, grounded=False)
    assert wanted_models(rundir, _config()) == ["base", "retrieval", "epoch-2", "epoch-3", "best"]
    with pytest.raises(QatuneError, match="no model 'best\\+rag'"):
        wanted_models(rundir, _config(["best+rag"]))


def test_grounded_run_adds_base_and_best_with_retrieved_context(tmp_path):
    rundir = _run(tmp_path, grounded=True)
    assert wanted_models(rundir, _config()) == [
        "base",
        "retrieval",
        "epoch-2",
        "epoch-3",
        "best",
        "base+rag",
        "best+rag",
    ]
    assert wanted_models(rundir, _config(["epoch-2+rag"])) == ["base", "epoch-2+rag"]


def test_questions_the_data_does_not_answer_are_put_to_best_not_every_epoch(tmp_path):
    """On the eval set `unanswerable`, best stands for the epochs (the model the recommendation weighs);
    --models still names any."""
    rundir = _run(tmp_path, grounded=True)
    got = wanted_models(rundir, _config(), name="unanswerable")
    assert got == ["base", "retrieval", "best", "base+rag", "best+rag"]
    assert wanted_models(rundir, _config(["epoch-2"]), name="unanswerable") == ["base", "epoch-2"]
    assert "epoch-2" in wanted_models(rundir, _config(), name="test")


def test_grounded_answers_are_reused_only_while_adapter_and_index_are_unchanged(tmp_path):
    rundir = _run(tmp_path, grounded=True)
    config = _config()
    names = ["epoch-3", "epoch-3+rag", "best+rag"]
    first = model_fingerprints(rundir, config, names)
    assert first["epoch-3"] != first["epoch-3+rag"]  # the same adapter answers differently with context
    assert first["epoch-3+rag"] == first["best+rag"]  # best is a copy of epoch-3: its answers are reused
    (rundir.index_dir / "vectors.safetensors").write_bytes(b"v2")
    second = model_fingerprints(rundir, config, names)
    assert second["epoch-3+rag"] != first["epoch-3+rag"]
    assert second["epoch-3"] != first["epoch-3"]  # closed-book answers take their budgets from the index too
