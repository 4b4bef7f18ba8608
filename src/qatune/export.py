"""`qatune export`: one adapter merged into an unquantized 16/32-bit copy of its base and saved as a plain
transformers folder (safetensors, tokenizer, chat template) with a model card (README.md) describing the
training data and the evaluation; the folder loads without peft or qatune."""

from __future__ import annotations

import html
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from qatune import __version__
from qatune.console import QatuneError, info
from qatune.rag import closed_book
from qatune.rag.card import grounded_usage
from qatune.rundir import RunDir, check_name
from qatune.storage import atomic_dir, atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from qatune.config import Config

DTYPES = ("bf16", "fp16", "fp32")
MARKER = "qatune_export.json"
GGUF_COMMAND = "python convert_hf_to_gguf.py {folder} --outfile model.gguf --outtype q8_0"
_RUN_PARTS = ("models_dir", "checkpoints_dir", "data_dir", "train_dir", "eval_root", "report_dir")


def export(run: Path, model_name: str = "best", out: Path | None = None, dtype: str = "bf16") -> Path:
    from qatune.config import load_for_run

    rundir = RunDir(run)
    if not rundir.root.is_dir():
        raise QatuneError("run directory not found; check --run", path=rundir.root)
    if dtype not in DTYPES:
        raise QatuneError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)} (4-bit weights are never exported)")
    model_name = closed_book(model_name)  # one set of weights answers both ways
    adapter = _adapter_dir(rundir, model_name)
    if out is None:
        raise QatuneError("give the folder to write with --out DIR")
    target = _check_target(Path(out), rundir)
    config = load_for_run(rundir.root, None, {}, save=False)
    info(f"merging {model_name} into a {dtype} copy of {config.model} -> {target}")
    with atomic_dir(target) as tmp:
        merged, tokenizer = _merged(config, adapter, dtype)
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        del merged
        grounded = rundir.has_index
        if grounded:  # the retrieval index travels with the model: grounded answers need it
            shutil.copytree(rundir.index_dir, tmp / "index")
        atomic_write_text(tmp / "README.md", model_card(rundir, model_name, dtype, config, target.name))
        atomic_write_json(
            tmp / MARKER,
            {
                "qatune_version": __version__,
                "run": str(rundir.root),
                "model": model_name,
                "base_model": config.model,
                "dtype": dtype,
            },
        )
        _check_folder(tmp)
    return target


def _adapter_dir(rundir: RunDir, model_name: str) -> Path:
    if model_name == "base":
        raise QatuneError("'base' has no adapter to merge: export a fine-tuned model (best or epoch-N)")
    check_name(model_name, "model name")
    available = rundir.adapter_names()
    if model_name not in available:
        raise QatuneError(
            f"no model {model_name!r} in {rundir.models_dir}; available: "
            f"{', '.join(available) or 'none (run qatune train)'}"
        )
    return rundir.model_dir(model_name)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_target(out: Path, rundir: RunDir) -> Path:
    """Never write over the run (or any folder holding it), its outputs, or a folder that is not ours."""
    target = out.expanduser().resolve()
    if _inside(rundir.root, target):
        raise QatuneError("--out would replace the run directory itself; choose a folder outside it", path=target)
    for part in _RUN_PARTS:
        if _inside(target, getattr(rundir, part)):
            raise QatuneError(
                f"--out is inside the run's {getattr(rundir, part).name}/ folder, which qatune "
                "manages; choose another folder",
                path=target,
            )
    if target.exists():
        if not target.is_dir():
            raise QatuneError("--out exists and is not a folder", path=target)
        if any(target.iterdir()) and not (target / MARKER).exists():
            raise QatuneError(
                "--out is a folder with other files in it; choose a new or empty folder "
                "(an earlier export is replaced whole)",
                path=target,
            )
    return target


def _merged(config: Config, adapter: Path, dtype: str) -> tuple[Any, Any]:
    """Base loaded unquantized in `dtype` (even when training used 4-bit), adapter merged into its weights."""
    from qatune.models.load import load_base, load_tokenizer
    from qatune.models.lora import load_adapters
    from qatune.models.placement import Placement
    from qatune.models.resolve import resolve_model
    from qatune.prompts import ensure_chat_template, stop_token_ids

    model_path = resolve_model(config.model)
    placement = Placement("cpu", "none", dtype, "export: unquantized merge")
    base = load_base(
        model_path, placement, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle
    )
    merged = load_adapters(base, {"export": adapter}, allow_pickle=config.allow_pickle).merge_and_unload()
    has_tokenizer = (adapter / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(
        str(adapter) if has_tokenizer else model_path, trust_remote_code=config.trust_remote_code
    )
    ensure_chat_template(tokenizer)
    stops = stop_token_ids(tokenizer)
    # plain `model.generate` then stops at the end-of-turn token too, as qatune's own generation does
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.config.pad_token_id = tokenizer.pad_token_id
    return merged, tokenizer


def _check_folder(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")):
        raise QatuneError("the merged weights were not written as safetensors", path=folder)
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith("adapter_")]
    if leftovers:
        raise QatuneError(f"the export still holds adapter files ({leftovers[0]})", path=folder)


# ---- model card (README.md): user data is escaped for Markdown and for the HTML it may be rendered to ----


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


def model_card(rundir: RunDir, model_name: str, dtype: str, config: Config, folder: str) -> str:
    hub_id = config.model if "/" in config.model and not Path(config.model).expanduser().exists() else None
    meta = {
        "library_name": "transformers",
        "tags": ["qatune", "lora", "merged"],
        **({"base_model": hub_id} if hub_id else {}),
    }
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n",
        f"# {_md(folder)}\n",
        f"A fine-tuned model made by qatune {__version__}: the LoRA adapter `{model_name}` of run "
        f"'{_md(rundir.root.name)}' merged into a {dtype} copy of {_md(_base_label(config.model))}. "
        "It loads with plain transformers; no peft or qatune needed.\n",
        _usage(folder),
        grounded_usage(folder, rundir.index_dir) if rundir.has_index else "",
        _data_section(rundir),
        _training_section(rundir, config, model_name),
        _eval_section(rundir),
        _gguf_section(folder),
    ]
    return "\n".join(parts)


def _usage(folder: str) -> str:
    return f"""## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{folder}")
model = AutoModelForCausalLM.from_pretrained("{folder}")
messages = [{{"role": "user", "content": "Your question"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True)
output = model.generate(**inputs, max_new_tokens=256, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
Prompts must go through the chat template (saved with the tokenizer): the model was trained on it.
"""


def _data_section(rundir: RunDir) -> str:
    report = _read(rundir.data_report_json)
    if not isinstance(report, dict):
        return "## Training data\n\nNo data report was found in the run.\n"
    source = report.get("source") or {}
    splits = report.get("splits") or {}
    lines = [
        "## Training data\n",
        f"- source: {_md(Path(str(source.get('path', '?'))).name)} (sheet {_md(source.get('sheet') or '-')}, "
        f"columns {_md(source.get('question_col', '?'))} / {_md(source.get('answer_col', '?'))}), "
        f"sha256 `{_md(str(source.get('sha256', '?'))[:16])}...`",
        f"- valid question/answer pairs: {_md(report.get('valid_pairs', '?'))}",
        "- split: " + ", ".join(f"{_md(k)} {_md(v)}" for k, v in splits.items()),
    ]
    dropped = [d for d in report.get("dropped") or [] if isinstance(d, dict)]
    if dropped:
        reasons = Counter(str(d.get("reason", "?")) for d in dropped).most_common(5)
        lines.append(f"- rows dropped: {len(dropped)} (" + "; ".join(f"{_md(r)}: {n}" for r, n in reasons) + ")")
    lines += [f"- warning: {_md(w)}" for w in (report.get("warnings") or [])[:10]]
    return "\n".join(lines) + "\n"


def _training_section(rundir: RunDir, config: Config, model_name: str) -> str:
    summary = _read(rundir.train_summary_json) or {}
    lora = _read(rundir.model_dir(model_name) / "adapter_config.json") or {}
    which = model_name
    if model_name == "best" and summary.get("best_epoch") is not None:
        which = f"best (= epoch-{_md(summary['best_epoch'])}, lowest validation loss)"
    targets = lora.get("target_modules") or config.train.target_modules
    targets = sorted(targets) if isinstance(targets, list | tuple | set) else _as_list(targets)
    lines = [
        "## Training\n",
        f"- this model: {which}",
        f"- LoRA r={_md(lora.get('r', config.train.lora_r))}, "
        f"alpha={_md(lora.get('lora_alpha', config.train.lora_alpha))}, "
        f"targets {_md(', '.join(map(str, targets)))}; learning rate {_lr_text(rundir, config)}",
        f"- epoch counts saved: {_md(', '.join(map(str, _as_list(summary.get('epochs', config.train.epochs)))))}",
    ]
    if summary:
        lines.append(
            f"- trained on {_md(summary.get('device', '?'))}, base quantization "
            f"{_md(summary.get('quantization', '?'))}, precision {_md(summary.get('precision', '?'))}, "
            f"{_md(summary.get('train_examples', '?'))} training examples"
        )
    return "\n".join(lines) + "\n"


def _lr_text(rundir: RunDir, config: Config) -> str:
    used = (_read(rundir.train_summary_json) or {}).get("lr")
    return f"{used:g}" if isinstance(used, int | float) else str(config.train.lr)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _eval_section(rundir: RunDir) -> str:
    table = ""
    try:
        from qatune.report.tables import results_markdown

        table = results_markdown(rundir.root)
    except ImportError:
        table = _scores_markdown(rundir)
    except Exception as exc:  # the card must not fail over a damaged eval file
        info(f"eval tables unavailable ({type(exc).__name__}); using scores.json directly")
        table = _scores_markdown(rundir)
    return "## Evaluation\n\n" + (table.strip() or "No evaluation in this run yet (`qatune eval`).") + "\n"


def _scores_markdown(rundir: RunDir) -> str:
    """Means per model and metric from each RUN/eval/NAME/scores.json."""
    blocks = []
    for name in rundir.eval_sets():
        scores = _read(rundir.eval_dir(name) / "scores.json")
        if not isinstance(scores, dict) or not isinstance(scores.get("models"), dict):
            continue
        metrics = [m for m in scores.get("metrics") or [] if isinstance(m, str)][:8]
        rows = [
            f"### {_md(name)} (n={_md(scores.get('n', '?'))})\n",
            "| model | " + " | ".join(_md(m) for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for model, values in scores["models"].items():
            cells = [_mean(values, m) for m in metrics]
            rows.append(f"| {_md(model)} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def _mean(values: Any, metric: str) -> str:
    entry = values.get(metric) if isinstance(values, dict) else None
    mean = entry.get("mean") if isinstance(entry, dict) else None
    return f"{mean:.3f}" if isinstance(mean, int | float) and not isinstance(mean, bool) else "-"


def _gguf_section(folder: str) -> str:
    command = GGUF_COMMAND.format(folder=folder)
    return (
        "## GGUF (llama.cpp, Ollama, LM Studio)\n\n"
        "qatune writes safetensors. For a GGUF file, run llama.cpp's converter on this folder "
        "(from a llama.cpp checkout, after `pip install -r requirements.txt` there):\n\n"
        f"```\n{command}\n```\n"
    )
