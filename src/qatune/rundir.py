"""The only code that knows the layout of a run directory. Every stage reads and writes through it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qatune.console import QatuneError
from qatune.rag.index import is_index

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    """Names that become path parts (models, eval sets) may not climb out of the run directory."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise QatuneError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)")
    return name


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root).expanduser().resolve())

    # data (prepare)
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def split_file(self, split: str) -> Path:
        return self.data_dir / f"{check_name(split, 'split')}.jsonl"

    @property
    def data_report_json(self) -> Path:
        return self.data_dir / "report.json"

    @property
    def data_report_md(self) -> Path:
        return self.data_dir / "report.md"

    @property
    def data_stamp_json(self) -> Path:
        """What the prepared data was made from (input hash, output hashes): lets a pipeline skip prepare."""
        return self.data_dir / "stamp.json"

    # config and provenance
    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_json(self) -> Path:
        return self.root / "manifest.json"

    # train
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / check_name(name, "model name")

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def metrics_jsonl(self) -> Path:
        return self.train_dir / "metrics.jsonl"

    @property
    def train_summary_json(self) -> Path:
        return self.train_dir / "summary.json"

    @property
    def tb_dir(self) -> Path:
        return self.train_dir / "tb"

    @property
    def token_cache_dir(self) -> Path:
        return self.train_dir / "cache"

    @property
    def index_dir(self) -> Path:
        """The retrieval index of the training pairs (grounded models and the retrieval baseline)."""
        return self.root / "index"

    @property
    def has_index(self) -> bool:
        """The run has a retrieval index (grounded training wrote one): its grounded models can answer."""
        return is_index(self.index_dir)

    # eval
    @property
    def eval_root(self) -> Path:
        return self.root / "eval"

    def eval_dir(self, name: str) -> Path:
        return self.eval_root / check_name(name, "eval set name")

    def eval_generations(self, name: str) -> Path:
        return self.eval_dir(name) / "generations.jsonl"

    def eval_scores(self, name: str) -> Path:
        return self.eval_dir(name) / "scores.json"

    def eval_combined(self, name: str) -> Path:
        return self.eval_dir(name) / "combined_responses.json"

    def eval_inputs(self, name: str) -> Path:
        """Fingerprints of the questions and models the saved generations came from (resume/staleness)."""
        return self.eval_dir(name) / "inputs.json"

    def eval_sets(self) -> list[str]:
        if not self.eval_root.is_dir():
            return []
        return sorted(p.name for p in self.eval_root.iterdir() if (p / "scores.json").exists())

    # report
    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    def adapter_names(self) -> list[str]:
        """Saved fine-tuned models, `epoch-N` sorted by N, then `best` if present."""
        if not self.models_dir.is_dir():
            return []
        epochs = []
        for p in self.models_dir.iterdir():
            m = re.fullmatch(r"epoch-(\d+)", p.name)
            if m and (p / "adapter_config.json").exists():
                epochs.append((int(m.group(1)), p.name))
        names = [n for _, n in sorted(epochs)]
        if (self.models_dir / "best" / "adapter_config.json").exists():
            names.append("best")
        return names

    def require(self, path: Path, hint: str) -> Path:
        if not path.exists():
            raise QatuneError(f"{path} not found: {hint}")
        return path
