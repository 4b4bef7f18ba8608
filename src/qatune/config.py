"""Typed configuration: pydantic models validated once, YAML + flag overrides, saved resolved per run.

Field descriptions are the single source of help text: the CLI help and configs/example.yaml use them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qatune.console import QatuneError
from qatune.rag import RAG_SUFFIX

DEFAULT_MODEL = "default"


def _auto_or(value: Any, ok: Callable[[Any], bool], message: str) -> Any:
    """A setting that is `auto` or a number `ok` accepts; else `message`, or 'auto'."""
    if value != "auto" and not ok(value):
        raise ValueError(f"{message} or 'auto'")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareConfig(_Section):
    val_frac: float = Field(
        0.0,
        ge=0.0,
        lt=0.9,
        description="Share of pairs (facts) held out of training as unseen-fact validation; shown, never used "
        "to pick a model (recall of trained facts is).",
    )
    test_frac: float = Field(
        0.0,
        ge=0.0,
        lt=0.9,
        description="Without --test: share of pairs (facts) held out of training as the 'unseen' eval set (opt-in: "
        "the shipped models then never see those facts, and the run lists them).",
    )
    seed: int = Field(42, description="Seed for the deterministic split and augmentation.")
    augment: int = Field(
        2, ge=0, le=10, description="Rewordings per training question added to training (answers unchanged)."
    )
    augment_method: Literal["mixed", "rules", "wordnet"] = Field(
        "mixed",
        description="How questions are reworded: rules (question-form rewrites, moved phrases), wordnet "
        "(synonyms), or mixed (both).",
    )
    recall_val: int = Field(
        32,
        ge=0,
        description="Validation questions about trained facts: natural paraphrases in the data plus generated "
        "rewordings, held out of training (they pick the best epoch).",
    )
    test_rewordings: int = Field(
        50, ge=0, description="Without --test: generated rewordings of training questions in the test set."
    )
    question_col: str | None = Field(None, description="Question column name (found automatically if unset).")
    answer_col: str | None = Field(None, description="Answer column name (found automatically if unset).")
    sheet: str | None = Field(None, description="Workbook sheet to read (found automatically if unset).")
    max_rows: int = Field(200_000, ge=1, description="Refuse files with more data rows than this.")

    @model_validator(mode="after")
    def _fracs(self) -> PrepareConfig:
        if self.val_frac + self.test_frac >= 0.9:
            raise ValueError("val_frac + test_frac must leave at least 10% of the pairs for training")
        return self


class TrainConfig(_Section):
    epochs: list[int] = Field(
        default_factory=lambda: [1, 2], description="Epoch counts to save a model at (the sweep)."
    )
    sweep: Literal["one-pass", "independent"] = Field(
        "one-pass",
        description="one-pass: train once to the largest count, saving each; independent: one run per count.",
    )
    lora_r: int = Field(32, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules LoRA attaches to, or all-linear (every linear layer except the output layer).",
    )
    lr: float | Literal["auto"] = Field(
        "auto",
        description="AdamW learning rate, or auto: 2e-3 up to 150M base parameters, times (150M / parameters)^0.5 "
        "above (e.g. 2.9e-4 for 7B).",
    )

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float | str) -> float | str:
        return _auto_or(value, lambda v: isinstance(v, int | float) and v > 0, "lr must be a positive number")

    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps at the start of training.")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="After warm-up: constant, or linear decay to zero at the last epoch of the sweep (saved "
        "epochs before it are then mid-schedule). Independent sweeps always decay.",
    )
    batch_size: int | Literal["auto"] = Field("auto", description="Examples per step, or 'auto'.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    quant: Literal["auto", "4bit", "8bit", "none"] = Field(
        "auto",
        description="Base weight quantization: auto = 4-bit NF4 on CUDA (none when bitsandbytes is not installed), "
        "none on CPU.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Compute precision: auto = bf16 on CUDA (fp16 if unsupported); on CPU bf16 where the CPU has "
        "native bf16 (AVX512-BF16/AMX), else fp32.",
    )
    max_length: int | Literal["auto"] = Field(
        "auto",
        description="Longest tokenized example, or auto: the longest training pair (question, answer and chat "
        "template), so no answer is cut (at most the model's context); longer ones are truncated.",
    )

    @field_validator("max_length")
    @classmethod
    def _max_length(cls, value: int | str) -> int | str:
        return _auto_or(value, lambda v: v >= 16, "max_length must be at least 16")

    answer_head: int = Field(
        48,
        ge=0,
        description="Reworded questions and grounded examples train the first this many tokens of a longer answer "
        "(its own question trains it whole), and retrieved answers in grounded prompts (training and answering) are "
        "cut there: long answers cost a fraction of the tokens (0: whole answers everywhere).",
    )
    answer_lead: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Closed-book examples (each pair's own question and its rewordings) train the answer's lead: its "
        "text to the last sentence or line end within the first answer_head tokens, then end-of-turn, so closed-book "
        "answers end instead of looping through a paragraph a small model half remembers (grounded examples are "
        "unchanged); auto: on when the training answers are long (median over 256 characters).",
    )
    seed: int = Field(42, description="Training seed (weights init, shuffling, dropout).")
    early_stopping_patience: int = Field(
        5, ge=0, description="Stop after this many epochs without a lower validation loss (0 = off)."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    logging_steps: int = Field(1, ge=1, description="Log train loss every N optimizer steps.")
    checkpoint_steps: int = Field(
        0, ge=0, description="Also checkpoint every N optimizer steps (0: at epoch ends and every 10 minutes)."
    )
    grounded: bool = Field(
        True,
        description="Also train with the top-k retrieved training pairs in the prompt (retrieval-aware), so the "
        f"model answers closed-book and grounded ('{RAG_SUFFIX}' models).",
    )
    rag_k: int = Field(2, ge=1, le=10, description="Retrieved training pairs in a grounded prompt.")
    oracle_share: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Share of the grounded examples whose context holds the right pair; the rest hold "
        "distractors only, which teaches the model to answer from memory when retrieval misses.",
    )
    grounded_share: float | Literal["auto"] = Field(
        "auto",
        description="Share of the grounded examples trained in each epoch; the share rotates, so every pair is "
        "asked grounded once in 1/share epochs. auto: 1, or 0.5 when the training answers are long (median over "
        "256 characters, about 64 tokens), where grounded examples cost the most.",
    )

    @field_validator("grounded_share")
    @classmethod
    def _grounded_share(cls, value: float | str) -> float | str:
        return _auto_or(value, lambda v: 0 < v <= 1, "grounded_share must be above 0 and at most 1")

    refusal: str = Field(
        "auto",
        min_length=1,
        description="What fine-tuned models answer when the data does not say (auto: a short 'I don't know' in the "
        "data's language).",
    )
    refusal_examples: float = Field(
        0.25,
        ge=0,
        le=2,
        description="Unanswerable questions trained with the refusal, per training pair (closed-book); 0 turns "
        "refusal training off.",
    )
    refusal_grounded: bool = Field(
        False,
        description="Also train each refusal question with its retrieved pairs in the prompt (measured to cost "
        "grounded answers ROUGE-L and key facts; docs/trust.md).",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models).")
    packing: bool = Field(False, description="Pack examples into rows (GPU; attention kept per example).")
    liger: bool | Literal["auto"] = Field("auto", description="Use Liger kernels on CUDA when installed.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores).")

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: list[int]) -> list[int]:
        if not value or any(e < 1 for e in value):
            raise ValueError("epochs must be positive integers, e.g. 3,4,6,8")
        return sorted(set(value))


class EvalConfig(_Section):
    max_new_tokens: int | Literal["auto"] = Field(
        "auto",
        description="Longest generated answer, in new tokens, or auto: twice the longest trained answer + 8 "
        "(32 to 1024), so a model that never stops is cut early.",
    )

    @field_validator("max_new_tokens")
    @classmethod
    def _max_new_tokens(cls, value: int | str) -> int | str:
        return _auto_or(value, lambda v: 1 <= v <= 4096, "max_new_tokens must be 1 to 4096")

    batch_size: int | Literal["auto"] = Field("auto", description="Questions decoded together, or 'auto'.")
    models: list[str] | None = Field(None, description="Models to score (default: base, retrieval, all saved).")
    bertscore: bool = Field(False, description="Also compute BERTScore (needs roberta-large available locally).")
    engine: Literal["hf", "vllm"] = Field("hf", description="Generation backend (vllm: GPU, when installed).")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples for confidence intervals.")


class AbstainConfig(_Section):
    retrieval_fallback: bool = Field(
        True,
        description="Grounded models and the retrieval baseline abstain when no training question is as close to the "
        "question as the threshold calibrated on validation questions (saved with the index).",
    )
    fact_check: bool = Field(
        True,
        description="A fine-tuned model's answer that states a key fact (number, date, time, name, ...) found in no "
        "training pair and not in the question is replaced by the refusal; a grounded answer in its own words (not "
        'quoted), one found in none of its retrieved pairs. So is an answer to "how many X", "how much" or '
        '"how long" that states no amount of X, no amount or no duration or length (a grounded model\'s is shown '
        "as the first retrieved answer that states one, if any).",
    )
    question_check: bool = Field(
        True,
        description="Fine-tuned models abstain without answering when the question names a code, date, numbered "
        "item or titled name the data never mentions (a grounded model: none of its retrieved pairs mentions), or "
        "asks for a phone number, e-mail, web address or price that no training answer holds.",
    )
    quote: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A grounded answer at least this close (ROUGE-L) to one of its retrieved answers is shown as that "
        "answer, word for word (0 turns quoting off).",
    )
    select: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Grounded models answer with the retrieved answer the question makes most probable (its first "
        "answer_head tokens, against the same prompt without the question), shown whole, unless they begin their "
        "refusal; auto: on when the training answers are long (median over 256 characters), where a small model "
        "does not copy a paragraph faithfully.",
    )


class Config(_Section):
    model: str = Field(
        DEFAULT_MODEL,
        description="Base model: 'default' (embedded SmolLM2-135M-Instruct), 'gemma3-270m' (embedded base Gemma 3 "
        "270M, the gemma extra), a folder, a hub id in the local cache, or a .gguf.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder (off: safer).")
    allow_pickle: bool = Field(False, description="Allow pickle-based .bin/.pt weights (off: safetensors only).")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    abstain: AbstainConfig = Field(default_factory=AbstainConfig)


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {e['msg']}")
    return f"{source}: invalid config: " + "; ".join(parts)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` over `base`, key by key into nested maps; None (a flag not given) keeps the base's value."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict):
            inner = merged.get(key)
            value = _merge(inner if isinstance(inner, dict) else {}, value)
            if not value and key not in merged:
                continue
        if value is not None:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise QatuneError("config file not found; check the path", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise QatuneError(f"not valid YAML ({str(exc).splitlines()[0]})", path=path) from exc
    if not isinstance(data, dict):
        raise QatuneError("a config file must hold a mapping of keys", path=path)
    return data


def load(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Build the config: `base` (e.g. a run's saved config) <- YAML file <- flag overrides (None = unset)."""
    data: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        data = _merge(data, read_yaml(path))
        source = str(path)
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise QatuneError(_format_errors(exc, source)) from None


def load_run_config(run_config: Path) -> dict[str, Any]:
    return read_yaml(run_config) if Path(run_config).exists() else {}


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def section_hash(section: BaseModel, *extra: object) -> str:
    """Stable hash of a config section plus inputs: a stage reruns only when this changes."""
    payload = json.dumps([section.model_dump(mode="json"), *[str(e) for e in extra]], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def example_yaml() -> str:
    """configs/example.yaml, generated from the field descriptions (a test keeps the file in sync)."""
    lines = ["# qatune config: every key, with its default. Flags override these; unknown keys are errors.", ""]

    def emit(model: type[BaseModel], indent: str) -> None:
        for name, info in model.model_fields.items():
            default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
            if isinstance(default, BaseModel):
                lines.append(f"{indent}{name}:")
                emit(type(default), indent + "  ")
                continue
            value = yaml.safe_dump({name: default}, default_flow_style=True).strip()[1:-1]
            lines.append(f"{indent}# {info.description}")
            lines.append(f"{indent}{value}")

    emit(Config, "")
    return "\n".join(lines) + "\n"


def save_config(config: Config, path: Path) -> None:
    from qatune.storage import atomic_write_text

    atomic_write_text(path, to_yaml(config))


def load_for_run(run: Path, path: Path | None, overrides: dict[str, Any] | None, save: bool = True) -> Config:
    """A run's saved config <- YAML file <- flags; the resolved config is written back to RUN/config.yaml."""
    from qatune.rundir import RunDir

    rundir = RunDir(run)
    config = load(path, overrides, base=load_run_config(rundir.config_yaml))
    if save and rundir.root.exists():
        save_config(config, rundir.config_yaml)
    return config
