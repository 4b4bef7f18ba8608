"""`train` on the tiny model: sweep outputs and their files, summary and metrics contracts, loss falling,
every LoRA tensor trained, determinism, skipping a finished run, and the input checks."""

from __future__ import annotations

import json

import pytest
import torch

from qatune import train as train_mod
from qatune.config import load
from qatune.console import QatuneError
from qatune.models.placement import cpu_has_native_bf16
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.train import setup as train_setup
from qatune.train import stage
from train_runs import adapter, assert_same_adapter, config, write_data

SUMMARY_KEYS = {
    "train_seconds",
    "epochs_run",
    "train_examples",
    "train_tokens",
    "answer_tokens",
    "tokens_per_second",
    "peak_memory_bytes",
    "device",
    "quantization",
    "precision",
    "sweep",
    "best_epoch",
    "epochs",
    "eval_loss_by_epoch",
    "input_hash",
    "epochs_not_reached",
}
MODEL_FILES = {
    "adapter_model.safetensors",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "qatune.json",
}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    run = write_data(tmp_path_factory.mktemp("train") / "run")
    summary = train_mod.train(run, config(tiny_model_dir)).to_json()
    return run, summary


def test_sweep_saves_each_requested_epoch_and_the_best(trained):
    run, summary = trained
    rundir = RunDir(run)
    assert rundir.adapter_names() == ["epoch-1", "epoch-2", "best"]
    for name in ("epoch-1", "epoch-2", "best"):
        assert MODEL_FILES <= {p.name for p in rundir.model_dir(name).iterdir()}
    assert summary["epochs"] == [1, 2] and summary["epochs_not_reached"] == []
    losses = summary["eval_loss_by_epoch"]
    best = min(losses, key=losses.get)
    assert summary["best_epoch"] == int(best)
    assert_same_adapter(rundir.model_dir("best"), rundir.model_dir(f"epoch-{best}"))
    info = json.loads((rundir.model_dir("epoch-2") / "qatune.json").read_text())
    assert info["epoch"] == 2 and info["eval_loss"] == pytest.approx(losses["2"])


def test_summary_metrics_and_manifest_contracts(trained):
    run, summary = trained
    rundir = RunDir(run)
    assert SUMMARY_KEYS <= summary.keys()
    assert json.loads(rundir.train_summary_json.read_text()) == summary
    assert summary["sweep"] == "one-pass" and summary["device"].startswith("cpu")
    expected = "bf16" if cpu_has_native_bf16() else "fp32"  # auto precision on CPU
    assert (summary["precision"], summary["quantization"]) == (expected, "none")
    assert summary["epochs_run"] == 2 and summary["train_examples"] == 2 * 20
    assert summary["shared_prefix_tokens"] > 0 and summary["batch_size"] == 2  # 20 pairs: >= 8 steps per epoch
    assert summary["train_tokens"] > summary["answer_tokens"] > 0
    assert summary["tokens_per_second"] > 0 and summary["peak_memory_bytes"] > 0
    rows = read_jsonl(rundir.metrics_jsonl)
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert len(steps) == summary["steps"] and [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert all({"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_second"} <= r.keys() for r in steps)
    assert [(r["epoch"], r["eval_loss"]) for r in evals] == [
        (int(k), v) for k, v in summary["eval_loss_by_epoch"].items()
    ]
    assert list(rundir.tb_dir.glob("events.out.tfevents.*"))
    manifest = json.loads(rundir.manifest_json.read_text())
    assert manifest["stages"]["train"]["status"] == "finished"
    assert {
        "qatune_version",
        "packages",
        "git",
        "config_sha256",
        "data_sha256",
        "device",
        "precision",
    } <= manifest.keys()
    assert set(manifest["data_sha256"]) == {"train.jsonl", "val.jsonl"} and manifest["packages"]["torch"]
    assert not list(rundir.checkpoints_dir.glob("ckpt-*"))  # finished: nothing left to resume


def test_loss_falls_and_warm_up_then_constant_rate(trained):
    run, summary = trained
    train_loss = summary["train_loss_by_epoch"]
    assert all(v == v and v < 100 for v in train_loss.values())
    assert train_loss["2"] < train_loss["1"]
    assert summary["eval_loss_by_epoch"]["2"] < summary["eval_loss_by_epoch"]["1"]
    lrs = [r["lr"] for r in read_jsonl(RunDir(run).metrics_jsonl) if "lr" in r]
    assert lrs[0] < lrs[1] < lrs[2] == lrs[-1] == pytest.approx(5e-3)  # 2 warm-up steps, then constant


def test_linear_schedule_decays_to_zero_over_the_whole_sweep(tiny_model_dir, tmp_path):
    run = write_data(tmp_path / "run", n_train=8, n_val=2)
    summary = train_mod.train(run, config(tiny_model_dir, lr_schedule="linear", batch_size=2)).to_json()
    rows = read_jsonl(RunDir(run).metrics_jsonl)
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert len(lrs) == summary["steps"] == 8  # 4 steps an epoch, one pass to epoch 2
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(5e-3)  # 2 warm-up steps
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # then down every step
    assert lrs[-1] == pytest.approx(5e-3 / 6)  # the last step's rate; zero after it
    assert RunDir(run).adapter_names() == ["epoch-1", "epoch-2", "best"]  # epoch-1 saved mid-schedule


def test_every_lora_tensor_changed(trained, tiny_model_dir):
    from peft import get_peft_model_state_dict

    from qatune.models.placement import choose_placement

    cfg = config(tiny_model_dir)
    initial = get_peft_model_state_dict(
        train_setup.load_model(cfg, str(tiny_model_dir), choose_placement("none", "fp32"), {"liger": False})
    )
    final = adapter(RunDir(trained[0]).model_dir("epoch-2"))
    assert initial.keys() == final.keys() and len(final) == 2 * 2 * 2  # 2 layers x q,v x A,B
    for key in final:
        assert not torch.equal(initial[key], final[key]), f"{key} did not change"


def test_same_seed_and_data_give_identical_adapters(trained, tiny_model_dir, tmp_path):
    run = write_data(tmp_path / "again")
    train_mod.train(run, config(tiny_model_dir))
    for name in ("epoch-1", "epoch-2", "best"):
        assert_same_adapter(RunDir(run).model_dir(name), RunDir(trained[0]).model_dir(name))


def test_a_finished_run_is_not_retrained(trained, tiny_model_dir, monkeypatch):
    run, summary = trained
    cfg = config(tiny_model_dir)
    assert train_mod.is_current(run, cfg)
    monkeypatch.setattr(stage, "setup", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert train_mod.train(run, cfg).to_json() == summary
    assert not train_mod.is_current(run, config(tiny_model_dir, lr=1e-3))


def test_independent_sweep_trains_one_run_per_count(tiny_model_dir, tmp_path):
    run = write_data(tmp_path / "run", n_train=8, n_val=2)
    summary = train_mod.train(run, config(tiny_model_dir, sweep="independent")).to_json()
    assert summary["sweep"] == "independent" and summary["epochs"] == [1, 2]
    assert summary["epochs_run"] == 3 and summary["train_examples"] == 3 * 8
    rows = read_jsonl(RunDir(run).metrics_jsonl)
    decayed = [r["lr"] for r in rows if r.get("run") == 2 and "lr" in r]
    assert decayed[-1] < max(decayed)  # each run decays its own schedule
    assert set(summary["eval_loss_by_epoch"]) == {"1", "2"}
    assert RunDir(run).adapter_names() == ["epoch-1", "epoch-2", "best"]


def test_early_stopping_reports_epochs_not_reached(tiny_model_dir, tmp_path, monkeypatch):
    from qatune.train import loop

    losses = iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(loop, "evaluate", lambda s: next(losses))
    run = write_data(tmp_path / "run", n_train=6, n_val=2)
    summary = train_mod.train(run, config(tiny_model_dir, epochs=[1, 2, 4], early_stopping_patience=1)).to_json()
    assert summary["epochs_run"] == 2 and summary["stopped_early"]
    assert summary["epochs"] == [1, 2] and summary["epochs_not_reached"] == [4]
    assert summary["best_epoch"] == 1
    assert_same_adapter(RunDir(run).model_dir("best"), RunDir(run).model_dir("epoch-1"))


def test_few_pairs_warn_and_memory_plan_is_printed(tiny_model_dir, tmp_path, capsys):
    run = write_data(tmp_path / "run", n_train=5, n_val=1)
    train_mod.train(run, config(tiny_model_dir, epochs=[1]))
    err = capsys.readouterr().err
    assert "only 5 training pairs" in err
    assert "memory needed" in err and "CPU: plain LoRA" in err


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"precision": "fp16"}, "fp16 needs a CUDA GPU"),
        ({"quant": "4bit"}, "needs a CUDA GPU"),
        ({"target_modules": ["no_such_proj"]}, "cannot attach LoRA"),
    ],
)
def test_settings_this_machine_cannot_run_are_clear_errors(tiny_model_dir, tmp_path, settings, message):
    run = write_data(tmp_path / "run", n_train=4, n_val=1)
    with pytest.raises(QatuneError, match=message):
        train_mod.train(run, config(tiny_model_dir, **settings))


def test_missing_data_says_to_prepare_first(tiny_model_dir, tmp_path):
    with pytest.raises(QatuneError, match="qatune prepare"):
        train_mod.train(tmp_path / "empty", config(tiny_model_dir))


@pytest.mark.parametrize(
    "train, message",
    [
        ({"epochs": [0, 3]}, "epochs must be positive"),
        ({"sweep": "both"}, "train.sweep"),
        ({"lr_rate": 1e-4}, "unknown key 'train.lr_rate'"),
        ({"batch_size": "big"}, "train.batch_size"),
        ({"lora_dropout": 1.5}, "train.lora_dropout"),
        ({"grad_accum": 0}, "train.grad_accum"),
    ],
)
def test_invalid_train_config_names_the_key(train, message):
    with pytest.raises(QatuneError, match=message):
        load(None, {"train": train})


def test_models_whose_cache_cannot_be_shared_fall_back_to_full_rows(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import cache_utils

    def unsupported(self, repeats):
        raise NotImplementedError("no batch expansion for this cache")

    monkeypatch.setattr(cache_utils.DynamicCache, "batch_repeat_interleave", unsupported)
    run = write_data(tmp_path / "run", n_train=6, n_val=2)
    summary = train_mod.train(run, config(tiny_model_dir, epochs=[1])).to_json()
    assert summary["shared_prefix_tokens"] == 0 and summary["epochs"] == [1]


def test_two_trainings_with_different_precision_in_one_process(tmp_path, tiny_model_dir):
    """A library caller may train fp32 then bf16 in one process (accelerate's state is process-wide)."""
    for precision in ("fp32", "bf16"):
        run = write_data(tmp_path / precision, n_train=6, n_val=2)
        summary = train_mod.train(run, config(tiny_model_dir, epochs=[1], precision=precision)).to_json()
        assert summary["precision"] == precision


def test_best_is_the_saved_epoch_that_recalls_trained_facts_best(tiny_model_dir, tmp_path, monkeypatch):
    """Validation rows that reword trained questions pick `best` by greedy ROUGE-L at the saved epochs,
    whatever the loss says; pairs whose facts were never trained are only shown."""
    from qatune.storage import read_jsonl, write_jsonl
    from qatune.train import recall

    run = write_data(tmp_path / "run", n_train=6, n_val=2)
    trained = read_jsonl(run / "data" / "train.jsonl")
    unseen = [{**r, "kind": "unseen"} for r in read_jsonl(run / "data" / "val.jsonl")]
    reworded = [
        {**r, "id": f"{r['id']}-val1", "question": "Say: " + r["question"], "kind": "generated"} for r in trained[:3]
    ]
    write_jsonl(run / "data" / "val.jsonl", unseen + reworded)
    scores = iter([0.2, 0.6, 0.4])
    asked: list[list[str]] = []

    def scorer(model, tokenizer, rows, device, autocast):
        asked.append([r["question"] for r in rows])
        return lambda: next(scores)

    monkeypatch.setattr(recall, "recall_scorer", scorer)
    summary = train_mod.train(run, config(tiny_model_dir, epochs=[1, 2, 3], early_stopping_patience=0)).to_json()
    assert asked == [[r["question"] for r in reworded]]
    assert summary["best_epoch"] == 2 and summary["recall_rougeL_by_epoch"] == {"1": 0.2, "2": 0.6, "3": 0.4}
    assert "ROUGE-L on held-out rewordings of trained questions" in summary["selected_by"]
    assert set(summary["unseen_loss_by_epoch"]) == {"1", "2", "3"} and summary["val_pairs"] == 3
    assert_same_adapter(RunDir(run).model_dir("best"), RunDir(run).model_dir("epoch-2"))
