"""Config: unknown keys and bad values are named; flags override the file; the example stays in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from qatune import config as cfg
from qatune.console import QatuneError
from qatune.flags import parse_list

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(cfg.load(path), cfg.Config)


def test_example_yaml_lists_every_key_with_its_help():
    text = (CONFIGS / "example.yaml").read_text()
    assert text == cfg.example_yaml(), "configs/example.yaml is stale: regenerate it from config.example_yaml()"
    loaded = cfg.load(CONFIGS / "example.yaml")
    assert loaded == cfg.Config()


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora_rank: 8\n")
    with pytest.raises(QatuneError, match=r"unknown key 'train.lora_rank'"):
        cfg.load(path)


def test_several_problems_are_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora_r: 0\n  sweep: sometimes\n")
    with pytest.raises(QatuneError) as err:
        cfg.load(path)
    assert "train.lora_r" in str(err.value) and "train.sweep" in str(err.value)


def test_flags_override_file_and_file_overrides_saved_run(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  lora_r: 4\n")
    base = {"train": {"lr": 0.5, "lora_alpha": 32}}
    loaded = cfg.load(path, {"train": {"lora_r": 16, "lr": None}}, base=base)
    assert (loaded.train.lr, loaded.train.lora_r, loaded.train.lora_alpha) == (0.001, 16, 32)


def test_epochs_are_sorted_and_deduplicated():
    assert cfg.load(None, {"train": {"epochs": [8, 3, 3, 4]}}).train.epochs == [3, 4, 8]
    with pytest.raises(QatuneError, match="epochs"):
        cfg.load(None, {"train": {"epochs": [0]}})


def test_cross_field_split_fractions():
    with pytest.raises(QatuneError, match="val_frac"):
        cfg.load(None, {"prepare": {"val_frac": 0.5, "test_frac": 0.45}})


def test_bad_yaml_is_one_clear_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(QatuneError, match="not valid YAML"):
        cfg.load(path)
    with pytest.raises(QatuneError, match="not found"):
        cfg.load(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = cfg.load_for_run(run, None, {"train": {"lora_r": 32}})
    again = cfg.load_for_run(run, None, {})
    assert again == saved and again.train.lora_r == 32


def test_parse_list():
    assert parse_list("3, 4,6") == ["3", "4", "6"]
    assert parse_list("3,4", int) == [3, 4]
    assert parse_list(None) is None
    with pytest.raises(QatuneError):
        parse_list("3,x", int)


def test_auto_learning_rate_scales_down_with_model_size():
    from qatune.train.lr import AUTO_LR, resolve_lr

    assert cfg.load().train.lr == "auto"
    assert resolve_lr("auto", 135_000_000) == AUTO_LR  # the embedded default
    assert resolve_lr("auto", 7_000_000_000) == pytest.approx(AUTO_LR * (150 / 7000) ** 0.5)  # ~2.9e-4
    assert resolve_lr(2e-4, 7_000_000_000) == 2e-4  # a given rate is used as it is
    assert cfg.load(None, {"train": {"lr": 5e-4}}).train.lr == 5e-4
    with pytest.raises(QatuneError, match="lr must be a positive number or 'auto'"):
        cfg.load(None, {"train": {"lr": -1}})
