"""Everything an export says about its model, written in one place: the model card (README.md: how to use the
weights, the training data and evaluation, user text escaped for Markdown and HTML), the Ollama Modelfile of a
GGUF export, the grounded `ask.py` script of a run with a retrieval index, and the export marker."""

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


def model_card(exported: Exported) -> str:
    rundir, config, folder = exported.rundir, exported.config, exported.folder
    hub_id = config.model if "/" in config.model and not Path(config.model).expanduser().exists() else None
    meta = {
        "library_name": "gguf" if exported.gguf else "transformers",
        "tags": ["qatune", "lora", "merged", *(["gguf"] if exported.gguf else [])],
        **({"base_model": hub_id} if hub_id else {}),
    }
    form = f"one {exported.weights} GGUF file" if exported.gguf else f"a {exported.weights} copy"
    runs_with = (
        "llama.cpp, Ollama and LM Studio run it; no Python, peft or qatune needed."
        if exported.gguf
        else "It loads with plain transformers; no peft or qatune needed."
    )
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n",
        f"# {_md(folder)}\n",
        f"A fine-tuned model made by qatune {__version__}: the LoRA adapter `{exported.model_name}` of run "
        f"'{_md(rundir.root.name)}' merged into {form} of {_md(_base_label(config.model))}. {runs_with}\n",
        _gguf_usage(folder) if exported.gguf else _usage(folder),
        grounded_usage(folder, rundir.index_dir) + _ask_usage(folder) if exported.grounded else "",
        _data_section(rundir),
        _training_section(rundir, config, exported.model_name),
        _eval_section(rundir),
        "" if exported.gguf else _gguf_section(rundir, exported.model_name),
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


def _ask_usage(folder: str) -> str:
    return (
        f"`{folder}/{ASK_SCRIPT}` does all of this without qatune (the same retrieval and prompt as `qatune serve`): "
        f'`python {folder}/{ASK_SCRIPT} "Your question"`, `--closed-book` without the retrieved pairs, '
        "`--json` to see them.\n"
    )


def _gguf_usage(folder: str) -> str:
    return f"""## Use

`{GGUF_FILE}` holds the weights, the tokenizer and the chat template the model was trained with; answers are
greedy (temperature 0) as qatune evaluated them.

- **Ollama**: `ollama create {folder} -f {folder}/Modelfile`, then `ollama run {folder}` (the Modelfile sets the
  template, the stop tokens and temperature 0).
- **LM Studio**: `lms import {folder}/{GGUF_FILE}` (or copy it under `~/.lmstudio/models/qatune/{folder}/`), load
  it and set temperature 0; LM Studio applies the chat template stored in the file.
- **llama.cpp**: `llama-cli -m {folder}/{GGUF_FILE} -cnv --temp 0`, or `llama-server -m {folder}/{GGUF_FILE}` for an
  OpenAI-compatible API.
- **Python**: `pip install llama-cpp-python`, then
  `Llama("{folder}/{GGUF_FILE}").create_chat_completion(messages=[{{"role": "user", "content": "..."}}],
  temperature=0)`.
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
    summary = read_summary(rundir.train_summary_json)
    lora = _read(rundir.model_dir(model_name) / "adapter_config.json") or {}
    which = model_name
    if model_name == "best" and summary is not None and summary.best_epoch is not None:
        which = f"best (= epoch-{_md(summary.best_epoch)}, lowest validation loss)"
    targets = lora.get("target_modules") or config.train.target_modules
    targets = sorted(targets) if isinstance(targets, list | tuple | set) else _as_list(targets)
    lines = [
        "## Training\n",
        f"- this model: {which}",
        f"- LoRA r={_md(lora.get('r', config.train.lora_r))}, "
        f"alpha={_md(lora.get('lora_alpha', config.train.lora_alpha))}, "
        f"targets {_md(', '.join(map(str, targets)))}; learning rate {_lr_text(rundir, config)}",
        f"- epoch counts saved: {_md(', '.join(map(str, summary.epochs if summary else config.train.epochs)))}",
    ]
    if summary:
        lines.append(
            f"- trained on {_md(_known(summary.device))}, base quantization "
            f"{_md(_known(summary.quantization))}, precision {_md(_known(summary.precision))}, "
            f"{_md(_known(summary.train_examples))} training examples"
        )
    return "\n".join(lines) + "\n"


def _known(value: Any) -> Any:
    return "?" if value is None else value


def _lr_text(rundir: RunDir, config: Config) -> str:
    summary = read_summary(rundir.train_summary_json)
    used = summary.lr if summary is not None else None
    return f"{used:g}" if used is not None else str(config.train.lr)


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


def _gguf_section(rundir: RunDir, model_name: str) -> str:
    return (
        "## GGUF (llama.cpp, Ollama, LM Studio)\n\n"
        "For one GGUF file with the tokenizer, the chat template and an Ollama Modelfile, export again:\n\n"
        f"```\nqatune export --run {rundir.root.name} --model {model_name} --format gguf --quant q8_0 "
        "--out DIR\n```\n"
    )
