"""Command-line flags backed by config fields: their help (the field's description and default, so the two never
drift apart), list and number parsing, and the flag groups that several commands share, declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_type_hints

import typer
from pydantic import BaseModel
from rich.markup import escape

from qatune.config import AbstainConfig, TrainConfig
from qatune.console import QatuneError


def default_text(section: type[BaseModel], field: str) -> str | None:
    """A field's default as its flag takes it (lists comma-separated, booleans on/off); None when unset."""
    info = section.model_fields[field]
    default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, list):
        return ",".join(str(v) for v in default)
    return str(default)


def help_for(section: type[BaseModel], field: str) -> str:
    """The help of the flag that sets `field`: its description and default, so the two never drift apart."""
    description = section.model_fields[field].description or ""
    default = default_text(section, field)
    return description if default is None else f"{description} [default: {default}]"


def parse_list(value: str | None, cast: type = str) -> list | None:
    """'3,4,6,8' -> [3, 4, 6, 8]; None stays None (flag not given)."""
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise QatuneError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from exc


def auto_number(value: str | None, cast: type = int) -> int | float | str | None:
    """'auto' or None as given; anything else must read as a number of type `cast`."""
    if value is None or value == "auto":
        return value
    try:
        return cast(value)
    except ValueError:
        raise QatuneError(f"expected a number or 'auto', got {value!r}") from None


@dataclass
class TrainFlags:
    """The training flags of `train` and `run`, declared once: each sets the TrainConfig field of its name and
    shows that field's help. `--seed` is each command's own (in `run` it also seeds the split)."""

    epochs: str | None = None  # comma-separated
    sweep: str | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    target_modules: str | None = None  # comma-separated
    lr: str | None = None  # a number or auto
    weight_decay: float | None = None
    batch_size: str | None = None  # a number or auto
    grad_accum: int | None = None
    quant: str | None = None
    precision: str | None = None
    max_length: str | None = None  # a number or auto
    answer_head: int | None = None
    answer_lead: str | None = None  # auto, on or off
    early_stopping_patience: int | None = None
    grounded: bool | None = None  # a switch: --grounded/--no-grounded
    rag_k: int | None = None
    grounded_share: str | None = None  # a number or auto
    oracle_share: float | None = None
    refusal: str | None = None
    refusal_examples: float | None = None
    refusal_grounded: bool | None = None

    def section(self) -> dict[str, Any]:
        """The `train` config section the flags set (None: not given)."""
        values = dict(vars(self))
        values.update(epochs=parse_list(self.epochs, int), target_modules=parse_list(self.target_modules))
        values.update(lr=auto_number(self.lr, float), batch_size=auto_number(self.batch_size))
        values.update(max_length=auto_number(self.max_length), grounded_share=auto_number(self.grounded_share, float))
        return values


@dataclass
class AbstainFlags:
    """The answer-time checks of `eval` and `run`: each sets the AbstainConfig field of its name."""

    retrieval_fallback: bool | None = None
    fact_check: bool | None = None
    question_check: bool | None = None
    quote: float | None = None
    select: str | None = None  # auto, on or off


def with_flags(group: type, section: type[BaseModel], name: str) -> Callable[[Callable[..., None]], Callable]:
    """Typer sees the fields of the dataclass `group` as options where a command has its parameter `name`
    (each with the help of the `section` field of its name); the command receives them as one `group`."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        by_name = inspect.Parameter.KEYWORD_ONLY  # typer passes every value by name
        hints, options = get_type_hints(group), []
        for f in fields(group):
            switch = [f"--{f.name}/--no-{f.name}".replace("_", "-")] if hints[f.name] == bool | None else []
            option = typer.Option(*switch, help=escape(help_for(section, f.name)))
            options.append(
                inspect.Parameter(f.name, by_name, default=None, annotation=Annotated[hints[f.name], option])
            )
        own = [p.replace(kind=by_name) for p in inspect.signature(command, eval_str=True).parameters.values()]
        at = [p.name for p in own].index(name)

        @functools.wraps(command)
        def with_flags(**values: Any) -> None:
            grouped = group(**{f.name: values.pop(f.name) for f in fields(group)})
            command(**values, **{name: grouped})

        with_flags.__signature__ = inspect.Signature(own[:at] + options + own[at + 1 :])  # type: ignore[attr-defined]
        return with_flags

    return decorate


with_train_flags = with_flags(TrainFlags, TrainConfig, "flags")
with_checks = with_flags(AbstainFlags, AbstainConfig, "checks")
