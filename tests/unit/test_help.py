"""One source of help text: every flag that sets a config field shows that field's description and default in
`--help`, and the docs state no default the config does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from qatune import config as cfg
from qatune.cli import app
from qatune.flags import default_text, help_for

ROOT = Path(__file__).resolve().parents[2]
# The config sections each command's flags set, first match wins; `run --seed` sets two fields.
SECTIONS = {
    "prepare": [cfg.PrepareConfig, cfg.Config],
    "train": [cfg.TrainConfig, cfg.Config],
    "eval": [cfg.EvalConfig, cfg.AbstainConfig, cfg.Config],
    "run": [cfg.TrainConfig, cfg.PrepareConfig, cfg.EvalConfig, cfg.AbstainConfig, cfg.Config],
}
SEVERAL = {("run", "seed"): [cfg.PrepareConfig, cfg.TrainConfig]}
ALL_SECTIONS = [cfg.Config, cfg.PrepareConfig, cfg.TrainConfig, cfg.EvalConfig, cfg.AbstainConfig]


def _flat(text: str) -> str:
    """Help as one line: panel borders and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _help_text(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    return _flat(result.output)


def _config_flags(command: str) -> list[tuple[str, list[type]]]:
    """(field, sections) for every option of `command` named like a field of the sections it sets."""
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    found = []
    for param in params:
        if (command, param.name) in SEVERAL:
            found.append((param.name, SEVERAL[(command, param.name)]))
            continue
        owner = next((s for s in SECTIONS[command] if param.name in s.model_fields), None)
        if owner is not None:
            found.append((param.name, [owner]))
    return found


@pytest.mark.parametrize("command", sorted(SECTIONS))
def test_config_flags_show_the_field_description_and_default(command):
    shown = _help_text(command)
    flags = _config_flags(command)
    assert len(flags) >= 3
    for field, sections in flags:
        for section in sections:
            description = section.model_fields[field].description
            assert description and _flat(description) in shown, f"{command} --{field}: description missing"
            default = default_text(section, field)
            if default is not None:
                assert _flat(f"{description} [default: {default}]") in shown, f"{command} --{field}: default missing"


def test_help_for_writes_lists_and_switches_as_flags_take_them():
    assert help_for(cfg.TrainConfig, "lora_r").endswith(f"[default: {cfg.TrainConfig().lora_r}]")
    epochs = ",".join(str(e) for e in cfg.TrainConfig().epochs)
    assert help_for(cfg.TrainConfig, "epochs").endswith(f"[default: {epochs}]")
    assert help_for(cfg.Config, "allow_pickle").endswith("[default: off]")
    assert "[default" not in help_for(cfg.PrepareConfig, "sheet")  # unset: found automatically


def test_precision_help_matches_the_placement_rule():
    """auto on CPU is bf16 where the CPU has native bf16 (model.choose_placement), not always fp32."""
    description = cfg.TrainConfig.model_fields["precision"].description or ""
    assert "native bf16" in description and "fp32" in description
    assert "fp16 if unsupported" in description


def _docs() -> list[tuple[str, str]]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [(p.name, line) for p in paths for line in p.read_text(encoding="utf-8").splitlines()]


def _field(flag: str) -> tuple[type, str] | None:
    """The one config field a flag name refers to (None when no field or several with different defaults)."""
    name = flag.replace("-", "_")
    owners = [s for s in ALL_SECTIONS if name in s.model_fields]
    if not owners or len({default_text(s, name) for s in owners}) > 1:
        return None
    return owners[0], name


# "`--sweep one-pass` (default)", "`--lr` (default 0.0002)", "`--lora-r` defaults to 8"
_CLAIMS = [
    re.compile(r"`--(?P<flag>[a-z][a-z-]*)[ =](?P<value>[^`]+)`\s*\(default\b"),
    re.compile(r"`--(?P<flag>[a-z][a-z-]*)`\s*\(default:?\s*`?(?P<value>[^)`]+)`?\)"),
    re.compile(r"`--(?P<flag>[a-z][a-z-]*)`[^.\n]{0,40}?\bdefaults? (?:to|is)\s*`?(?P<value>[\w.,+-]+)`?"),
]


def test_docs_state_no_default_the_config_does_not_have():
    checked = 0
    for name, line in _docs():
        for pattern in _CLAIMS:
            for match in pattern.finditer(line):
                field = _field(match["flag"])
                if field is None:
                    continue
                checked += 1
                expected = default_text(*field)
                assert match["value"].strip() == expected, f"{name}: {line.strip()!r} but the default is {expected}"
    assert checked >= 1  # docs/training.md: "`--sweep one-pass` (default)"


@pytest.mark.parametrize("key", ["precision", "lr", "lora_r", "epochs"])
def test_docs_do_not_contradict_key_defaults(key):
    """Plain-words claims about the defaults that were wrong before: auto precision is not always fp32 on CPU;
    stated learning rate, rank and epoch defaults match the config."""
    default = default_text(cfg.TrainConfig, key)
    words = {
        "precision": r"precision",
        "lr": r"learning rate|--lr\b",
        "lora_r": r"LoRA rank|rank\b|--lora-r\b",
        "epochs": r"epoch counts?|--epochs\b",
    }[key]
    for name, line in _docs():
        if not re.search(words, line, re.IGNORECASE) or "default" not in line.lower():
            continue
        if key == "precision":
            assert not re.search(r"fp32 on (the )?CPU", line) or "native" in line, f"{name}: {line.strip()!r}"
            continue
        stated = re.search(r"default(?:s to| is|:)?\s*`?(\d[\d.,e+-]*)`?", line)
        if stated:
            assert stated.group(1).rstrip(".,") == default, f"{name}: {line.strip()!r} but the default is {default}"
