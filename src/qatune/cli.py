"""The `qatune` command: one short function per subcommand that parses flags, loads the config and
calls one stage entry. No torch import happens until a stage runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape

from qatune import __version__, console
from qatune.config import Config, EvalConfig, PrepareConfig, TrainConfig, help_for, parse_list
from qatune.rag import RAG_SUFFIX

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune an open LLM on your question/answer spreadsheet and prove it got better.",
)

_DEBUG = {"on": False}


def _help(section: type[BaseModel], field: str) -> str:
    """A config-backed flag's help: the field's description and default (escaped: Typer reads rich markup)."""
    return escape(help_for(section, field))


def _c(field: str) -> str:
    return _help(Config, field)


def _p(field: str) -> str:
    return _help(PrepareConfig, field)


def _t(field: str) -> str:
    return _help(TrainConfig, field)


def _e(field: str) -> str:
    return _help(EvalConfig, field)


RunOpt = Annotated[Path, typer.Option("--run", help="Run directory.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file (flags override it).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars or chatter (CI, logs).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help=_c("model"))]
TrustOpt = Annotated[bool | None, typer.Option("--trust-remote-code", help=_c("trust_remote_code"))]
PickleOpt = Annotated[bool | None, typer.Option("--allow-pickle", help=_c("allow_pickle"))]


def _auto_number(value: str | None, cast: type = int) -> int | float | str | None:
    """'auto' or None as given; anything else must read as a number of type `cast`."""
    if value is None or value == "auto":
        return value
    try:
        return cast(value)
    except ValueError:
        raise console.QatuneError(f"expected a number or 'auto', got {value!r}") from None


def _print_version(value: bool) -> None:
    if value:
        console.out.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    _DEBUG["on"] = debug or os.environ.get("QATUNE_DEBUG") == "1"


def _prepare_overrides(val_frac, test_frac, seed, augment, question_col, answer_col, sheet) -> dict[str, Any]:
    return {
        "prepare": {
            "val_frac": val_frac,
            "test_frac": test_frac,
            "seed": seed,
            "augment": augment,
            "question_col": question_col,
            "answer_col": answer_col,
            "sheet": sheet,
        }
    }


@app.command()
def prepare(
    data: Annotated[Path | None, typer.Argument(help="Spreadsheet (.xlsx .csv .tsv .json .jsonl .parquet).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")] = Path("runs/latest"),
    test: Annotated[Path | None, typer.Option("--test", help="Explicit test set file.")] = None,
    val_frac: Annotated[float | None, typer.Option(help=_p("val_frac"))] = None,
    test_frac: Annotated[float | None, typer.Option(help=_p("test_frac"))] = None,
    seed: Annotated[int | None, typer.Option(help=_p("seed"))] = None,
    augment: Annotated[int | None, typer.Option(help=_p("augment"))] = None,
    augment_method: Annotated[str | None, typer.Option(help=_p("augment_method"))] = None,
    question_col: Annotated[str | None, typer.Option(help=_p("question_col"))] = None,
    answer_col: Annotated[str | None, typer.Option(help=_p("answer_col"))] = None,
    sheet: Annotated[str | None, typer.Option(help=_p("sheet"))] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Read, clean and split the spreadsheet into RUN/data (with a row-level report)."""
    from qatune import config as cfg
    from qatune.data.prepare import prepare as run_prepare

    console.set_quiet(quiet)
    overrides = _prepare_overrides(val_frac, test_frac, seed, augment, question_col, answer_col, sheet)
    overrides["prepare"]["augment_method"] = augment_method
    overrides["model"] = model
    run_prepare(data, out, cfg.load(config, overrides), test_file=test)


def _train_overrides(**flags: Any) -> dict[str, Any]:
    lists = {"epochs": int, "target_modules": str}
    section = {}
    for key, value in flags.items():
        if key in lists:
            value = parse_list(value, lists[key])
        elif key == "lr":
            value = _auto_number(value, float)
        elif key == "batch_size":
            value = _auto_number(value)
        section[key] = value
    return {"train": section}


@app.command()
def train(
    run: RunOpt,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    epochs: Annotated[str | None, typer.Option(help=_t("epochs"))] = None,
    sweep: Annotated[str | None, typer.Option(help=_t("sweep"))] = None,
    lora_r: Annotated[int | None, typer.Option(help=_t("lora_r"))] = None,
    lora_alpha: Annotated[float | None, typer.Option(help=_t("lora_alpha"))] = None,
    lora_dropout: Annotated[float | None, typer.Option(help=_t("lora_dropout"))] = None,
    target_modules: Annotated[str | None, typer.Option(help=_t("target_modules"))] = None,
    lr: Annotated[str | None, typer.Option(help=_t("lr"))] = None,
    weight_decay: Annotated[float | None, typer.Option(help=_t("weight_decay"))] = None,
    batch_size: Annotated[str | None, typer.Option(help=_t("batch_size"))] = None,
    grad_accum: Annotated[int | None, typer.Option(help=_t("grad_accum"))] = None,
    quant: Annotated[str | None, typer.Option(help=_t("quant"))] = None,
    precision: Annotated[str | None, typer.Option(help=_t("precision"))] = None,
    max_length: Annotated[int | None, typer.Option(help=_t("max_length"))] = None,
    seed: Annotated[int | None, typer.Option(help=_t("seed"))] = None,
    early_stopping_patience: Annotated[int | None, typer.Option(help=_t("early_stopping_patience"))] = None,
    grounded: Annotated[bool | None, typer.Option("--grounded/--no-grounded", help=_t("grounded"))] = None,
    rag_k: Annotated[int | None, typer.Option(help=_t("rag_k"))] = None,
    grounded_share: Annotated[float | None, typer.Option(help=_t("grounded_share"))] = None,
    oracle_share: Annotated[float | None, typer.Option(help=_t("oracle_share"))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    trust_remote_code: TrustOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune LoRA adapters on RUN/data, saving a model at each requested epoch count."""
    from qatune import config as cfg
    from qatune.train import train as run_train

    console.set_quiet(quiet)
    overrides = _train_overrides(
        epochs=epochs,
        sweep=sweep,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        grad_accum=grad_accum,
        quant=quant,
        precision=precision,
        max_length=max_length,
        seed=seed,
        early_stopping_patience=early_stopping_patience,
        grounded=grounded,
        rag_k=rag_k,
        grounded_share=grounded_share,
        oracle_share=oracle_share,
    )
    overrides.update(model=model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    from qatune.train.loop import TrainingInterrupted

    try:
        run_train(run, cfg.load_for_run(run, config, overrides), resume=resume)
    except TrainingInterrupted as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(130)


@app.command(name="eval")
def eval_(
    run: RunOpt,
    questions: Annotated[list[Path] | None, typer.Option("--questions", help="Extra question file(s).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Eval set name (default: file stem).")] = None,
    models: Annotated[str | None, typer.Option("--models", help=_e("models"))] = None,
    max_new_tokens: Annotated[str | None, typer.Option(help=_e("max_new_tokens"))] = None,
    batch_size: Annotated[str | None, typer.Option(help=_e("batch_size"))] = None,
    bertscore: Annotated[bool | None, typer.Option("--bertscore", help=_e("bertscore"))] = None,
    engine: Annotated[str | None, typer.Option(help=_e("engine"))] = None,
    config: ConfigOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Answer held-out questions with base, retrieval and every fine-tuned model; score them."""
    from qatune import config as cfg
    from qatune.evaluate.answer import evaluate

    console.set_quiet(quiet)
    overrides = {
        "eval": {
            "models": parse_list(models),
            "max_new_tokens": _auto_number(max_new_tokens),
            "batch_size": _auto_number(batch_size),
            "bertscore": bertscore,
            "engine": engine,
        },
        "allow_pickle": allow_pickle,
    }
    settings = cfg.load_for_run(run, config, overrides, save=False)
    if questions and name and len(questions) > 1:
        raise console.QatuneError("--name applies to one --questions file; give one file per eval command")
    for path in questions or [None]:
        evaluate(run, settings, questions=path, name=name)


@app.command()
def report(run: RunOpt, quiet: QuietOpt = False) -> None:
    """Write RUN/report/report.html (self-contained), results.csv/.md and the plots."""
    from qatune.report.html import build

    console.set_quiet(quiet)
    path = build(run)
    console.out.print(f"report: {path}", markup=False, soft_wrap=True)


@app.command(name="run")
def run_(
    data: Annotated[Path | None, typer.Argument(help="Spreadsheet; the example data when omitted.")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Explicit test set file.")] = None,
    questions: Annotated[list[Path] | None, typer.Option("--questions", help="Extra question file(s).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<data stem>).")] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    epochs: Annotated[str | None, typer.Option(help=_t("epochs"))] = None,
    sweep: Annotated[str | None, typer.Option(help=_t("sweep"))] = None,
    lora_r: Annotated[int | None, typer.Option(help=_t("lora_r"))] = None,
    lora_alpha: Annotated[float | None, typer.Option(help=_t("lora_alpha"))] = None,
    lora_dropout: Annotated[float | None, typer.Option(help=_t("lora_dropout"))] = None,
    target_modules: Annotated[str | None, typer.Option(help=_t("target_modules"))] = None,
    lr: Annotated[str | None, typer.Option(help=_t("lr"))] = None,
    weight_decay: Annotated[float | None, typer.Option(help=_t("weight_decay"))] = None,
    batch_size: Annotated[str | None, typer.Option(help=_t("batch_size"))] = None,
    grad_accum: Annotated[int | None, typer.Option(help=_t("grad_accum"))] = None,
    quant: Annotated[str | None, typer.Option(help=_t("quant"))] = None,
    precision: Annotated[str | None, typer.Option(help=_t("precision"))] = None,
    max_length: Annotated[int | None, typer.Option(help=_t("max_length"))] = None,
    early_stopping_patience: Annotated[int | None, typer.Option(help=_t("early_stopping_patience"))] = None,
    grounded: Annotated[bool | None, typer.Option("--grounded/--no-grounded", help=_t("grounded"))] = None,
    rag_k: Annotated[int | None, typer.Option(help=_t("rag_k"))] = None,
    grounded_share: Annotated[float | None, typer.Option(help=_t("grounded_share"))] = None,
    oracle_share: Annotated[float | None, typer.Option(help=_t("oracle_share"))] = None,
    seed: Annotated[
        int | None, typer.Option(help=f"Sets both seeds. Split: {_p('seed')} Training: {_t('seed')}")
    ] = None,
    augment: Annotated[int | None, typer.Option(help=_p("augment"))] = None,
    augment_method: Annotated[str | None, typer.Option(help=_p("augment_method"))] = None,
    max_new_tokens: Annotated[str | None, typer.Option(help=_e("max_new_tokens"))] = None,
    trust_remote_code: TrustOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The main job: prepare -> train -> eval -> report, reusing finished stages."""
    from qatune import pipeline

    console.set_quiet(quiet)
    overrides = _train_overrides(
        epochs=epochs,
        sweep=sweep,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        grad_accum=grad_accum,
        quant=quant,
        precision=precision,
        max_length=max_length,
        early_stopping_patience=early_stopping_patience,
        seed=seed,
        grounded=grounded,
        rag_k=rag_k,
        grounded_share=grounded_share,
        oracle_share=oracle_share,
    )
    overrides["prepare"] = {"seed": seed, "augment": augment, "augment_method": augment_method}
    overrides["eval"] = {"max_new_tokens": _auto_number(max_new_tokens)}
    overrides.update(model=model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    pipeline.run(
        data, out=out, config_path=config, overrides=overrides, test_file=test, question_files=list(questions or [])
    )


@app.command()
def chat(
    run: RunOpt,
    model: Annotated[
        str, typer.Option("--model", help=f"best, epoch-N or base (add {RAG_SUFFIX} for grounded).")
    ] = "best",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in new tokens.")] = 256,
    rag: Annotated[
        bool, typer.Option("--rag", help="Answer with the top-k retrieved training pairs in the prompt.")
    ] = False,
) -> None:
    """Chat with a fine-tuned model in the terminal (reads stdin line by line when not a TTY)."""
    from qatune.chat import chat as run_chat

    run_chat(run, model, max_new_tokens=max_new_tokens, rag=rag)


@app.command()
def serve(
    run: RunOpt,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="QATUNE_API_KEY", help="Require 'Authorization: Bearer KEY'.")
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Requests answered together in one batch (1: one at a time).")
    ] = 16,
) -> None:
    """OpenAI-compatible API for base and every adapter, plus a comparison page at /."""
    from qatune.serve.app import serve as run_serve

    run_serve(run, host=host, port=port, api_key=api_key, max_batch=max_batch)


@app.command()
def export(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    model: Annotated[str, typer.Option("--model", help="best or epoch-N.")] = "best",
    dtype: Annotated[str, typer.Option("--dtype", help="bf16, fp16 or fp32 (transformers folder).")] = "bf16",
    fmt: Annotated[
        str, typer.Option("--format", help="transformers (safetensors folder) or gguf (llama.cpp, Ollama).")
    ] = "transformers",
    quant: Annotated[str | None, typer.Option("--quant", help="GGUF weights: f16 (default) or q8_0.")] = None,
) -> None:
    """Merge an adapter into its base: a transformers folder, or one GGUF file with an Ollama Modelfile."""
    from qatune.export import export as run_export

    path = run_export(run, model, out, dtype=dtype, fmt=fmt, quant=quant)
    console.out.print(f"exported: {path}", markup=False, soft_wrap=True)


def _quiet_libraries() -> None:
    """Library progress bars and advice would drown qatune's own output; --debug keeps them."""
    if not _DEBUG["on"]:
        import warnings

        # peft calls a transformers API deprecated for v6; nothing a user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        for key, value in (
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
            ("TRANSFORMERS_VERBOSITY", "error"),
            ("TOKENIZERS_PARALLELISM", "false"),
            ("TF_CPP_MIN_LOG_LEVEL", "3"),
        ):
            os.environ.setdefault(key, value)


def main() -> None:
    _DEBUG["on"] = "--debug" in sys.argv[1:] or os.environ.get("QATUNE_DEBUG") == "1"
    _quiet_libraries()
    # OpenMP threads that spin while waiting steal the cores a shared or busy CPU needs: measured 10-20x
    # slower generation on 2 busy cores. Read once when torch loads, so it is set before any stage runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        app(standalone_mode=False)
    except console.QatuneError as exc:
        if _DEBUG["on"]:
            raise
        console.error_line(str(exc))
        sys.exit(console.EXIT_BAD_INPUT)
    except typer.Abort:
        console.error_line("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.error_line("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors (click's, vendored by typer) and anything unexpected
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(console.EXIT_BAD_INPUT)
        if _DEBUG["on"]:
            raise
        console.error_line(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(1)
