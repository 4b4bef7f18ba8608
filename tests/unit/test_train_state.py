"""The training stage's saved state as typed records: summary.json and checkpoint progress written by an earlier
qatune (tests/fixtures/main_run, from a tiny run; the model paths replaced) read back with every key and value,
a new training writes the same keys in the same order, and damaged values read as unset instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qatune import train as train_mod
from qatune.report import training
from qatune.rundir import RunDir
from qatune.train.state import LoraSummary, TrainProgress, TrainSummary, read_summary
from train_runs import config, write_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "main_run"
ADDED = ["refusal", "refusal_questions", "answer_leads"]  # summary keys added since the fixture (after oracle_share)


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["summary.json", "summary_independent.json"])
def test_an_earlier_summary_reads_back_with_every_key_and_value(name):
    old = _fixture(name)
    summary = TrainSummary.from_json(old)
    written = summary.to_json()
    assert {k: written[k] for k in old} == old and [k for k in written if k not in ADDED] == list(old)
    assert all(written[k] is None for k in ADDED)
    assert summary.epochs == old["epochs"] and summary.best_epoch == old["best_epoch"]
    assert summary.lora == LoraSummary(**old["lora"]) and summary.eval_loss_by_epoch == old["eval_loss_by_epoch"]


def test_an_earlier_checkpoints_progress_reads_back_with_every_key_and_value():
    old = _fixture("checkpoint_progress.json")
    progress = TrainProgress.from_json(old)
    assert progress.to_json() == old and list(progress.to_json()) == list(old)
    assert [h.epoch for h in progress.history] == [1, 2] and progress.saved == [1, 2]
    assert progress.history[0].run == 0  # one-pass mode


def test_a_new_training_writes_the_keys_an_earlier_one_wrote(tiny_model_dir, tmp_path):
    run = write_data(tmp_path / "run", n_train=6, n_val=2)
    summary = train_mod.train(run, config(tiny_model_dir, epochs=[1]))
    written = json.loads(RunDir(run).train_summary_json.read_text(encoding="utf-8"))
    old = list(_fixture("summary.json"))
    at = old.index("oracle_share") + 1
    assert list(written) == old[:at] + ADDED + old[at:]
    assert isinstance(written["refusal"], str) and written["refusal"]
    assert list(written["lora"]) == list(_fixture("summary.json")["lora"])
    assert read_summary(RunDir(run).train_summary_json) == summary and summary.epochs == [1]


def test_damaged_values_read_as_unset_and_other_keys_are_ignored(tmp_path):
    raw = _fixture("summary.json")
    raw.update(epochs="broken", tokens_per_second="fast", stopped_early=1, best_epoch=True, added_later=[1])
    raw.update(eval_loss_by_epoch={"1": 2.5, "2": "x", "3": None}, epochs_requested=[1, "two", 3], lora=[8])
    summary = TrainSummary.from_json(raw)
    assert summary.epochs == [] and summary.tokens_per_second is None and summary.stopped_early is None
    assert summary.best_epoch is None and summary.lora is None
    assert summary.eval_loss_by_epoch == {"1": 2.5, "3": None} and summary.epochs_requested == [1, 3]
    assert "added_later" not in summary.to_json()
    legacy = TrainSummary.from_json({"best_epoch": 2, "best_reason": "lowest loss on unseen facts"})
    assert legacy.selected_by == "lowest loss on unseen facts" and legacy.device is None
    path = tmp_path / "summary.json"
    for text in ("{not json", "[1, 2]"):
        path.write_text(text, encoding="utf-8")
        assert read_summary(path) is None
    assert read_summary(tmp_path / "missing.json") is None


def test_the_report_reads_an_earlier_summary():
    rows = dict(training.summary_rows(TrainSummary.from_json(_fixture("summary.json"))))
    assert rows["Best epoch"].startswith("epoch 2, chosen by highest greedy ROUGE-L")
    assert rows["Epochs run / requested"] == "2 of 2; sweep one-pass"
    assert rows["LoRA"] == "rank 8, alpha 16, dropout 0, on q_proj, v_proj; 1,792 trainable parameters"
    independent = dict(training.summary_rows(TrainSummary.from_json(_fixture("summary_independent.json"))))
    assert independent["Epochs run / requested"] == "3 of 3; sweep independent"
