"""The CLI shell: help without heavy imports, one-line errors with exit code 2, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys

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
