"""Everything an export says about its model, written in one place: the model card (README.md from card.md.jinja:
how to use the weights, the training data (RUN/data/report.json), the training (RUN/train/summary.json) and the
evaluation (RUN/eval/*/scores.json), user text escaped for Markdown and HTML), the Ollama Modelfile of a GGUF
export, the grounded `ask.py` script of a run with a retrieval index, and the export marker."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from qatune import __version__
from qatune.console import info
from qatune.rag.card import grounded_usage
from qatune.rundir import RunDir
from qatune.storage import atomic_write_json, atomic_write_text, read_json
from qatune.train.state import read_summary

if TYPE_CHECKING:
    from qatune.config import Config

MARKER = "qatune_export.json"
GGUF_FILE = "model.gguf"
ASK_SCRIPT = "ask.py"
CARD_TEMPLATE = "card.md.jinja"
GUARD_FILE = "guard.json"
# Self-contained: ask.py abstains as qatune does.
GUARD_MODULES = ("asked.py", "facts.py", "gaps.py", "refusal.py", "guard.py")


@dataclass(frozen=True)
class Exported:
    """What was written: the adapter, the run it came from and the weights' form."""

    rundir: RunDir
    model_name: str
    config: Config
    folder: str  # the export folder's name, as the card's examples use it
    weights: str  # "bf16" / "fp16" / "fp32" (transformers) or "f16" / "q8_0" (GGUF)
    gguf: bool = False

    @property
    def grounded(self) -> bool:
        return self.rundir.has_index


def describe(tmp: Path, exported: Exported, ollama: str | None = None) -> None:
    """README.md, the Modelfile (GGUF; `ollama` is its text), ask.py and the index (grounded), the marker."""
    if exported.grounded:  # the retrieval index travels with the model: grounded answers need it
        shutil.copytree(exported.rundir.index_dir, tmp / "index")
        from qatune.rag import ask

        shutil.copyfile(str(ask.__file__), tmp / ASK_SCRIPT)
        _bundle_guard(tmp, exported)
    if ollama is not None:
        atomic_write_text(tmp / "Modelfile", ollama)
    atomic_write_text(tmp / "README.md", model_card(exported))
    atomic_write_json(
        tmp / MARKER,
        {
            "qatune_version": __version__,
            "run": str(exported.rundir.root),
            "model": exported.model_name,
            "base_model": exported.config.model,
            "format": "gguf" if exported.gguf else "transformers",
            ("quant" if exported.gguf else "dtype"): exported.weights,
        },
    )


def modelfile(tokenizer: Any, add_bos: bool) -> str:
    """An Ollama Modelfile for the GGUF beside it: the chat template as a Go template (without the BOS llama.cpp
    adds itself when `add_bos`), the template's built-in system prompt, its stop tokens, greedy decoding."""
    from qatune.portable.ollama import go_template, turns
    from qatune.prompts import has_system_role, stop_token_ids

    found = turns(tokenizer, has_system_role(tokenizer))
    lines = [f"FROM ./{GGUF_FILE}", ""]
    if found is None:
        lines.append("# the chat template could not be written as an Ollama TEMPLATE; Ollama reads the GGUF's own")
    else:
        lines.append(f'TEMPLATE """{go_template(found, with_start=not add_bos)}"""')
        if found.default_system:
            lines.append(f'SYSTEM """{found.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(tokenizer.convert_ids_to_tokens(i))}" for i in stop_token_ids(tokenizer)]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


# ---- model card (README.md): the text is card.md.jinja; this gathers what it shows from the run ----


def _md(value: Any) -> str:
    """One line of inline Markdown text: HTML-escaped, Markdown and table syntax neutralised."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_\[\]|~#])", r"\\\1", text)


def _read(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except (OSError, ValueError):
        return None


def _base_label(model: str) -> str:
    from qatune.models.embedded import embedded

    shipped = embedded(model)
    if shipped is not None:
        return shipped.label
    return Path(model).name if ("/" in model and Path(model).expanduser().exists()) else model


def _bundle_guard(tmp: Path, exported: Exported) -> None:
    """guard.json (the run's refusal and answer-time checks) and the modules that apply them, for ask.py."""
    import qatune.trust
    from qatune.generate.select import selects
    from qatune.trust.run import run_guard, settings_of

    source = Path(qatune.trust.__file__).parent
    (tmp / "trust").mkdir()
    (tmp / "trust" / "__init__.py").write_text('"""qatune\'s answer-time checks, as the run used them."""\n')
    for name in GUARD_MODULES:
        shutil.copyfile(source / name, tmp / "trust" / name)
    settings = settings_of(run_guard(exported.rundir, exported.config, facts=False))
    chooses = selects(exported.rundir, exported.config)  # grounded answers chosen among the retrieved ones
    settings["choose"] = {"head": exported.config.train.answer_head} if chooses else None
    settings["context_head"] = exported.config.train.answer_head  # retrieved answers in a prompt, cut as trained
    atomic_write_json(tmp / GUARD_FILE, settings)


def _abstain(exported: Exported) -> dict[str, Any]:
    """The refusal the model was trained with and the answer-time checks qatune applies on top of it."""
    from qatune.generate.select import selects
    from qatune.trust.run import run_guard

    guard = run_guard(exported.rundir, exported.config, facts=False)
    checks = [
        f"the retrieval fallback (no training question at least {guard.min_similarity:.3f} MiniLM-similar to it)"
        if guard.min_similarity is not None
        else "",
        "the question check (a code, date, numbered item or titled name the data never mentions, or its retrieved "
        "pairs do not for a grounded model, or a phone number, e-mail, web address or price no answer holds)"
        if guard.check_questions
        else "",
        "the fact check (an answer stating a key fact no training pair holds, or a grounded answer one its retrieved "
        'pairs do not hold; or an answer stating no amount or duration to "how many", "how much" or "how '
        'long", which a grounded model shows as a retrieved answer that states one where it can)'
        if guard.check_facts
        else "",
    ]
    summary = read_summary(exported.rundir.train_summary_json)
    trained = bool(summary and summary.refusal_questions)
    checks_text = "; ".join(c for c in checks if c) or "none"
    choose = exported.config.train.answer_head if selects(exported.rundir, exported.config) else None
    return {"refusal": guard.refusal, "trained": trained, "checks": checks_text, "quote": guard.quote, "choose": choose}


def model_card(exported: Exported) -> str:
    """How to use the weights (transformers or GGUF, and grounded), the training data, the training, the evaluation."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    rundir, config, folder = exported.rundir, exported.config, exported.folder
    hub_id = config.model if "/" in config.model and not Path(config.model).expanduser().exists() else None
    meta = {
        "library_name": "gguf" if exported.gguf else "transformers",
        "tags": ["qatune", "lora", "merged", *(["gguf"] if exported.gguf else [])],
        **({"base_model": hub_id} if hub_id else {}),
    }
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=False,  # Markdown: the template escapes the run's text with |md
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md
    evaluation, score_sets = _evaluation(rundir)
    return env.get_template(CARD_TEMPLATE).render(
        front_matter=yaml.safe_dump(meta, sort_keys=False),
        version=__version__,
        folder=folder,
        model_name=exported.model_name,
        run_name=rundir.root.name,
        weights=exported.weights,
        gguf=exported.gguf,
        gguf_file=GGUF_FILE,
        ask_script=ASK_SCRIPT,
        base=_base_label(config.model),
        grounded=grounded_usage(folder, rundir.index_dir, config.train.answer_head) if exported.grounded else "",
        abstain=_abstain(exported),
        guard_file=GUARD_FILE,
        data=_data(rundir),
        training=_training(rundir, config, exported.model_name),
        evaluation=evaluation,
        score_sets=score_sets,
    )


def _data(rundir: RunDir) -> dict[str, Any] | None:
    """What prepare's report says about the data (the spreadsheet's name only: its local path stays private)."""
    report = _read(rundir.data_report_json)
    if not isinstance(report, dict):
        return None
    source = report.get("source") or {}
    dropped = [d for d in report.get("dropped") or [] if isinstance(d, dict)]
    return {
        "file": Path(str(source.get("path", "?"))).name,
        "sheet": source.get("sheet") or "-",
        "question_col": source.get("question_col", "?"),
        "answer_col": source.get("answer_col", "?"),
        "sha256": str(source.get("sha256", "?"))[:16],
        "valid_pairs": report.get("valid_pairs", "?"),
        "splits": list((report.get("splits") or {}).items()),
        "dropped": len(dropped),
        "reasons": Counter(str(d.get("reason", "?")) for d in dropped).most_common(5),
        "warnings": (report.get("warnings") or [])[:10],
    }


def _training(rundir: RunDir, config: Config, model_name: str) -> dict[str, Any]:
    summary = read_summary(rundir.train_summary_json)
    lora = _read(rundir.model_dir(model_name) / "adapter_config.json") or {}
    targets = lora.get("target_modules") or config.train.target_modules
    used_lr = summary.lr if summary is not None else None
    trained_on = None
    if summary is not None:
        known = [("?" if v is None else v) for v in (summary.device, summary.quantization, summary.precision)]
        examples = "?" if summary.train_examples is None else summary.train_examples
        trained_on = dict(zip(("device", "quantization", "precision"), known, strict=True), examples=examples)
    return {
        "best_epoch": summary.best_epoch if model_name == "best" and summary is not None else None,
        "r": lora.get("r", config.train.lora_r),
        "alpha": lora.get("lora_alpha", config.train.lora_alpha),
        "targets": sorted(targets) if isinstance(targets, list | tuple | set) else [targets],
        "lr": f"{used_lr:g}" if used_lr is not None else str(config.train.lr),
        "epochs": summary.epochs if summary else config.train.epochs,
        "trained_on": trained_on,
    }


def _evaluation(rundir: RunDir) -> tuple[str, list[dict[str, Any]]]:
    """The report's results tables; if they cannot be built, the means in each RUN/eval/NAME/scores.json."""
    try:
        from qatune.report.tables import results_markdown

        return results_markdown(rundir.root).strip(), []
    except ImportError:
        pass
    except Exception as exc:  # the card must not fail over a damaged eval file
        info(f"eval tables unavailable ({type(exc).__name__}); using scores.json directly")
    sets = []
    for name in rundir.eval_sets():
        scores = _read(rundir.eval_dir(name) / "scores.json")
        if isinstance(scores, dict) and isinstance(scores.get("models"), dict):
            metrics = [m for m in scores.get("metrics") or [] if isinstance(m, str)][:8]
            rows = [(model, [_mean(values, m) for m in metrics]) for model, values in scores["models"].items()]
            sets.append({"name": name, "n": scores.get("n", "?"), "metrics": metrics, "rows": rows})
    return "", sets


def _mean(values: Any, metric: str) -> str:
    entry = values.get(metric) if isinstance(values, dict) else None
    mean = entry.get("mean") if isinstance(entry, dict) else None
    return f"{mean:.3f}" if isinstance(mean, int | float) and not isinstance(mean, bool) else "-"
