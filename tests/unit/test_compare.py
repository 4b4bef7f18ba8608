"""Bootstrap CIs and the paired test on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from qatune.evaluate.compare import mean_ci, paired_difference


def _sample(n: int, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(0.5, 0.2, n))


def test_ci_contains_the_mean_and_shrinks_with_n():
    small, large = mean_ci(_sample(10)), mean_ci(_sample(400))
    for stat in (small, large):
        lo, hi = stat["ci95"]
        assert lo < stat["mean"] < hi
    assert large["ci95"][1] - large["ci95"][0] < (small["ci95"][1] - small["ci95"][0]) / 3
    assert mean_ci(_sample(10)) == small  # fixed seed: same intervals every time


def test_ci_ignores_nulls_and_handles_degenerate_inputs():
    assert mean_ci([None, None]) == {"mean": None, "ci95": None}
    assert mean_ci([0.25]) == {"mean": 0.25, "ci95": [0.25, 0.25]}
    assert mean_ci([1.0, None, 3.0])["mean"] == 2.0
    assert mean_ci([0.4] * 12) == {"mean": pytest.approx(0.4), "ci95": [0.4, 0.4]}


def test_paired_test_small_p_for_a_consistent_gain_large_p_for_noise():
    base = _sample(20, seed=1)
    better = [b + 0.1 + 0.02 * (i % 3) for i, b in enumerate(base)]
    gain = paired_difference(better, base)
    assert gain["diff"] == pytest.approx(np.mean(np.subtract(better, base)))
    assert gain["p"] < 0.001 and gain["ci95"][0] > 0
    noise = np.random.default_rng(2).normal(0, 0.05, 20)
    same = paired_difference(list(np.add(base, noise)), base)
    assert same["p"] > 0.2 and same["ci95"][0] < 0 < same["ci95"][1]
    worse = paired_difference(base, better)
    assert worse["diff"] < 0 and worse["ci95"][1] < 0 and worse["p"] == gain["p"]  # two-sided


def test_paired_test_is_exact_for_small_n_and_skips_missing_pairs():
    # 5 positive differences: only 2 of the 2**5 sign patterns are as extreme -> p = 1/16
    result = paired_difference([1.0, 2.0, 3.0, 4.0, 5.0, None], [0.0, 1.0, 2.0, 3.0, 4.0, 9.0])
    assert result["diff"] == 1.0 and result["p"] == pytest.approx(1 / 16)
    assert paired_difference([1.0, 2.0], [1.0, 2.0]) == {"diff": 0.0, "ci95": [0.0, 0.0], "p": 1.0}
    assert paired_difference([None], [1.0]) == {"diff": None, "ci95": None, "p": None}
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])
