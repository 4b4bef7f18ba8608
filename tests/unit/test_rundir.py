"""Run-directory paths: names from users (models, eval sets) cannot climb out of the run directory."""

from __future__ import annotations

import pytest

from qatune.console import QatuneError
from qatune.rundir import RunDir, check_name


@pytest.mark.parametrize(
    "name",
    [
        "../escape",
        "..",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "",
        ".hidden",
        "x" * 65,
        "epoch-1/../../x",
        "nul\x00",
        "epoch-1\n",
    ],
)
def test_crafted_names_are_refused(name, tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(QatuneError, match="invalid"):
        check_name(name)
    with pytest.raises(QatuneError):
        run.model_dir(name)
    with pytest.raises(QatuneError):
        run.eval_dir(name)


def test_ordinary_names_stay_inside_the_run(tmp_path):
    run = RunDir(tmp_path / "run")
    for name in ("epoch-3", "best", "paraphrases_v2", "test.2026"):
        for path in (run.model_dir(name), run.eval_dir(name)):
            assert path.resolve().is_relative_to(run.root)


def test_run_root_is_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/../runs/x")
    assert run.root == (tmp_path / "runs" / "x").resolve()


def test_adapter_names_lists_saved_epochs_in_order_then_best(tmp_path):
    run = RunDir(tmp_path)
    for name in ("epoch-10", "epoch-2", "best", "epoch-3", "not-a-model"):
        (run.models_dir / name).mkdir(parents=True)
        if name != "not-a-model":
            (run.models_dir / name / "adapter_config.json").write_text("{}")
    (run.models_dir / "epoch-4").mkdir()  # half-written: no adapter_config.json
    assert run.adapter_names() == ["epoch-2", "epoch-3", "epoch-10", "best"]


def test_has_index_once_a_retrieval_index_is_saved(tmp_path):
    import numpy as np

    from qatune.rag.index import Index, load_index

    run = RunDir(tmp_path / "run")
    assert not run.has_index
    run.index_dir.mkdir(parents=True)
    assert not run.has_index  # an empty folder holds no index
    Index([{"id": "1", "question": "Q?", "answer": "A."}], np.ones((1, 2), dtype=np.float32)).save(run.index_dir)
    assert run.has_index and load_index(run.index_dir).pairs[0]["answer"] == "A."
