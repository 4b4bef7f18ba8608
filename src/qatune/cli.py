"""The `qatune` command: one short function per subcommand that parses flags, loads the config and calls one
stage entry. No torch import happens until a stage runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape

from qatune import __version__, console
from qatune.config import Config, EvalConfig, PrepareConfig, TrainConfig
from qatune.flags import AbstainFlags, TrainFlags, auto_number, help_for, parse_list, with_checks, with_train_flags
from qatune.rag import RAG_SUFFIX

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune an open LLM on your question/answer spreadsheet and prove it got better.",
)


def _help(section: type[BaseModel], field: str) -> str:
    """A config-backed flag's help (escaped: Typer reads rich markup)."""
    return escape(help_for(section, field))


RunOpt = Annotated[Path, typer.Option("--run", help="Run directory.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file (flags override it).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars or chatter (CI, logs).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help=_help(Config, "model"))]
TrustOpt = Annotated[bool | None, typer.Option("--trust-remote-code", help=_help(Config, "trust_remote_code"))]
PickleOpt = Annotated[bool | None, typer.Option("--allow-pickle", help=_help(Config, "allow_pickle"))]
UnanswerableOpt = Annotated[
    Path | None,
    typer.Option(
        "--unanswerable",
        help="File of questions the data does not answer (a question column; answers ignored): the eval set "
        "'unanswerable', where the right response is to abstain. Default: the example's own set for the example "
        "data, else one generated from qatune's question banks and near misses of your questions.",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        console.out.print(__version__)
        raise typer.Exit()


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]
_VERSION = typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
VersionOpt = Annotated[bool, _VERSION]
_CHAT_MODELS = f"best, epoch-N or base (add {RAG_SUFFIX} for grounded)."
_CHAT_RAG = "Answer with the top-k retrieved training pairs in the prompt."
_BOTH_SEEDS = f"Sets both seeds. Split: {_help(PrepareConfig, 'seed')} Training: {_help(TrainConfig, 'seed')}"


@app.callback()
def _root(debug: DebugOpt = False, version: VersionOpt = False) -> None:
    """Options of every command (main() reads --debug itself, before any command runs)."""


@app.command()
def prepare(
    data: Annotated[Path | None, typer.Argument(help="Spreadsheet (.xlsx .csv .tsv .json .jsonl .parquet).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")] = Path("runs/latest"),
    test: Annotated[Path | None, typer.Option("--test", help="Explicit test set file.")] = None,
    unanswerable: UnanswerableOpt = None,
    val_frac: Annotated[float | None, typer.Option(help=_help(PrepareConfig, "val_frac"))] = None,
    test_frac: Annotated[float | None, typer.Option(help=_help(PrepareConfig, "test_frac"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help(PrepareConfig, "seed"))] = None,
    augment: Annotated[int | None, typer.Option(help=_help(PrepareConfig, "augment"))] = None,
    augment_method: Annotated[str | None, typer.Option(help=_help(PrepareConfig, "augment_method"))] = None,
    question_col: Annotated[str | None, typer.Option(help=_help(PrepareConfig, "question_col"))] = None,
    answer_col: Annotated[str | None, typer.Option(help=_help(PrepareConfig, "answer_col"))] = None,
    sheet: Annotated[str | None, typer.Option(help=_help(PrepareConfig, "sheet"))] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Read, clean and split the spreadsheet into RUN/data (with a row-level report)."""
    from qatune import config as cfg
    from qatune.data.prepare import prepare as run_prepare

    console.set_quiet(quiet)
    section: dict[str, Any] = {"val_frac": val_frac, "test_frac": test_frac, "seed": seed, "augment": augment}
    section.update(augment_method=augment_method, question_col=question_col, answer_col=answer_col, sheet=sheet)
    run_prepare(
        data, out, cfg.load(config, {"prepare": section, "model": model}), test_file=test, unanswerable=unanswerable
    )


@app.command()
@with_train_flags
def train(
    run: RunOpt,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    flags: TrainFlags = TrainFlags(),
    seed: Annotated[int | None, typer.Option(help=_help(TrainConfig, "seed"))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    trust_remote_code: TrustOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune LoRA adapters on RUN/data, saving a model at each requested epoch count."""
    from qatune import config as cfg
    from qatune.train import train as run_train
    from qatune.train.loop import TrainingInterrupted

    console.set_quiet(quiet)
    overrides = {"train": {**flags.section(), "seed": seed}, "model": model, "trust_remote_code": trust_remote_code}
    overrides["allow_pickle"] = allow_pickle
    try:
        run_train(run, cfg.load_for_run(run, config, overrides), resume=resume)
    except TrainingInterrupted as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(130)


@app.command(name="eval")
@with_checks
def eval_(
    run: RunOpt,
    questions: Annotated[list[Path] | None, typer.Option("--questions", help="Extra question file(s).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Eval set name (default: file stem).")] = None,
    unanswerable: UnanswerableOpt = None,
    models: Annotated[str | None, typer.Option("--models", help=_help(EvalConfig, "models"))] = None,
    max_new_tokens: Annotated[str | None, typer.Option(help=_help(EvalConfig, "max_new_tokens"))] = None,
    batch_size: Annotated[str | None, typer.Option(help=_help(EvalConfig, "batch_size"))] = None,
    bertscore: Annotated[bool | None, typer.Option("--bertscore", help=_help(EvalConfig, "bertscore"))] = None,
    engine: Annotated[str | None, typer.Option(help=_help(EvalConfig, "engine"))] = None,
    checks: AbstainFlags = AbstainFlags(),
    config: ConfigOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Answer held-out questions with base, retrieval and every fine-tuned model; score them."""
    from qatune import config as cfg
    from qatune.evaluate.answer import evaluate

    console.set_quiet(quiet)
    section: dict[str, Any] = {"models": parse_list(models), "bertscore": bertscore, "engine": engine}
    section.update(max_new_tokens=auto_number(max_new_tokens), batch_size=auto_number(batch_size))
    settings = cfg.load_for_run(
        run, config, {"eval": section, "abstain": vars(checks), "allow_pickle": allow_pickle}, save=False
    )
    if questions and name and len(questions) > 1:
        raise console.QatuneError("--name applies to one --questions file; give one file per eval command")
    if unanswerable is not None:
        evaluate(run, settings, questions=unanswerable, name=None if questions else name, unanswerable=True)
        if not questions:
            return
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
@with_train_flags
@with_checks
def run_(
    data: Annotated[Path | None, typer.Argument(help="Spreadsheet; the example data when omitted.")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Explicit test set file.")] = None,
    unanswerable: UnanswerableOpt = None,
    questions: Annotated[list[Path] | None, typer.Option("--questions", help="Extra question file(s).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<data stem>).")] = None,
    test_frac: Annotated[float | None, typer.Option(help=_help(PrepareConfig, "test_frac"))] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    flags: TrainFlags = TrainFlags(),
    seed: Annotated[int | None, typer.Option(help=_BOTH_SEEDS)] = None,
    augment: Annotated[int | None, typer.Option(help=_help(PrepareConfig, "augment"))] = None,
    augment_method: Annotated[str | None, typer.Option(help=_help(PrepareConfig, "augment_method"))] = None,
    max_new_tokens: Annotated[str | None, typer.Option(help=_help(EvalConfig, "max_new_tokens"))] = None,
    checks: AbstainFlags = AbstainFlags(),
    trust_remote_code: TrustOpt = None,
    allow_pickle: PickleOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The main job: prepare -> train -> eval -> report, reusing finished stages."""
    from qatune import pipeline

    console.set_quiet(quiet)
    overrides: dict[str, Any] = {
        "prepare": {"seed": seed, "augment": augment, "augment_method": augment_method, "test_frac": test_frac},
        "train": {**flags.section(), "seed": seed},
        "eval": {"max_new_tokens": auto_number(max_new_tokens)},
        "abstain": vars(checks),
    }
    overrides.update(model=model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    pipeline.run(
        data,
        out=out,
        config_path=config,
        overrides=overrides,
        test_file=test,
        question_files=list(questions or []),
        unanswerable=unanswerable,
    )


@app.command()
def chat(
    run: RunOpt,
    model: Annotated[str, typer.Option("--model", help=_CHAT_MODELS)] = "best",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in new tokens.")] = 256,
    rag: Annotated[bool, typer.Option("--rag", help=_CHAT_RAG)] = False,
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


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("QATUNE_DEBUG") == "1"
    if not debug:  # --debug keeps the libraries' own output
        console.quiet_libraries()
    # OpenMP threads that spin while waiting steal the cores a shared or busy CPU needs: measured 10-20x
    # slower generation on 2 busy cores. Read once when torch loads, so it is set before any stage runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        app(standalone_mode=False)
    except console.QatuneError as exc:
        if debug:
            raise
        console.error_line(str(exc))
        sys.exit(console.EXIT_BAD_INPUT)
    except (typer.Abort, KeyboardInterrupt) as exc:
        console.error_line("aborted" if isinstance(exc, typer.Abort) else "interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors (click's, vendored by typer) and anything unexpected
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(console.EXIT_BAD_INPUT)
        if debug:
            raise
        console.error_line(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(1)
