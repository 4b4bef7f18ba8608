"""The CLI shell: help without heavy imports, one-line errors with exit code 2, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

from qatune import __version__


def _qatune(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qatune", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_help_lists_every_command_without_importing_torch():
    probe = (
        "import sys; sys.argv=['qatune','--help']\n"
        "from qatune.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','peft','matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    for command in ("prepare", "train", "eval", "report", "run", "chat", "serve", "export"):
        assert command in result.stdout
    assert "HEAVY []" in result.stdout


def test_version():
    assert _qatune("--version").stdout.strip() == __version__


def test_missing_run_is_one_line_exit_2(tmp_path):
    result = _qatune("report", "--run", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "nope") in result.stderr


def test_bad_config_key_names_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epoch: 3\n")
    result = _qatune("prepare", "--out", str(tmp_path / "run"), "--config", str(config))
    assert result.returncode == 2 and "unknown key 'train.epoch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = _qatune("--debug", "report", "--run", str(tmp_path / "nope"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_option_is_a_usage_error():
    result = _qatune("train", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_train_and_run_read_the_shared_training_flags_the_same_way(monkeypatch, tmp_path):
    """The training flags are declared once for both commands: the same flags give the same train section."""
    from typer.testing import CliRunner

    from qatune import config, pipeline
    from qatune.cli import TrainFlags, app
    from qatune.console import QatuneError

    seen: dict[str, dict] = {}
    monkeypatch.setattr(config, "load_for_run", lambda run, path, overrides, **kw: seen.setdefault("train", overrides))
    monkeypatch.setattr("qatune.train.train", lambda *a, **kw: None)
    monkeypatch.setattr(pipeline, "run", lambda data, overrides, **kw: seen.setdefault("run", overrides))
    flags = ["--epochs", "1,3", "--lr", "1e-3", "--batch-size", "auto", "--no-grounded", "--lora-r", "4", "--seed", "7"]
    for command in (["train", "--run", str(tmp_path)], ["run", str(tmp_path / "data.csv")]):
        result = CliRunner().invoke(app, [*command, *flags])
        assert result.exit_code == 0, result.output
    assert seen["train"]["train"] == seen["run"]["train"]
    section = {k: v for k, v in seen["run"]["train"].items() if v is not None}
    assert section == {"epochs": [1, 3], "lr": 1e-3, "batch_size": "auto", "grounded": False, "lora_r": 4, "seed": 7}
    assert set(seen["run"]["train"]) == {f.name for f in fields(TrainFlags)} | {"seed"}
    bad = CliRunner().invoke(app, ["train", "--run", str(tmp_path), "--lr", "fast"])
    assert isinstance(bad.exception, QatuneError) and "expected a number or 'auto'" in str(bad.exception)
