"""Statistics over per-question scores: a mean with its 95% percentile-bootstrap CI, and a paired
comparison of two models on the same questions (bootstrap CI of the mean difference, sign-flip test)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

SEED = 20241128  # fixed: the same scores always give the same intervals
WIDE_CI_BELOW = 30
# Scores come from float32 models: a paired difference this small is rounding noise (the same answer
# embedded in a different batch), so it counts as a tie rather than as a win or a loss.
NOISE = 1e-6


def _clean(values: Sequence[float | None]) -> Any:
    import numpy as np

    return np.asarray([v for v in values if v is not None], dtype=float)


def _bootstrap_ci(x: Any, resamples: int, seed: int) -> list[float] | None:
    import numpy as np
    from scipy import stats

    if len(x) == 0:
        return None
    if np.all(x == x[0]):  # includes n == 1: every resample has the same mean
        return [float(x[0]), float(x[0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=resamples,
            method="percentile",
            confidence_level=0.95,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def mean_ci(values: Sequence[float | None], resamples: int = 2000, seed: int = SEED) -> dict[str, Any]:
    """{"mean", "ci95": [lo, hi]} over the non-null values (both null when there is none)."""
    x = _clean(values)
    if len(x) == 0:
        return {"mean": None, "ci95": None}
    return {"mean": float(x.mean()), "ci95": _bootstrap_ci(x, resamples, seed)}


def _sign_flip_p(d: Any, resamples: int, seed: int) -> float:
    """Two-sided paired permutation test: under no difference, each paired difference's sign is a coin
    flip (exact when 2**n <= resamples)."""
    import numpy as np
    from scipy import stats

    if np.all(d == 0) or len(d) == 1:  # n == 1: both sign flips are as extreme as the observation
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.permutation_test(
            (d,),
            lambda s, axis: np.mean(s, axis=axis),
            permutation_type="samples",
            n_resamples=resamples,
            alternative="two-sided",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return float(min(1.0, res.pvalue))


def paired_difference(
    model: Sequence[float | None], base: Sequence[float | None], resamples: int = 2000, seed: int = SEED
) -> dict[str, Any]:
    """{"diff": mean(model - base), "ci95", "p"} over questions where both have a value."""
    import numpy as np

    if len(model) != len(base):
        raise ValueError("paired values must be aligned question by question")
    pairs = [(m, b) for m, b in zip(model, base, strict=True) if m is not None and b is not None]
    if not pairs:
        return {"diff": None, "ci95": None, "p": None}
    d = np.asarray([m - b for m, b in pairs], dtype=float)
    d[np.abs(d) < NOISE] = 0.0
    return {"diff": float(d.mean()), "ci95": _bootstrap_ci(d, resamples, seed), "p": _sign_flip_p(d, resamples, seed)}
