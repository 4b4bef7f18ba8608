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


def test_bootstrap_ci_equals_an_independent_percentile_bootstrap():
    """The same resamples drawn with numpy alone (rows of indices from the fixed seed) give the same interval."""
    from qatune.evaluate.compare import SEED

    x = np.asarray(_sample(15, seed=3))
    means = x[np.random.default_rng(SEED).integers(0, len(x), (2000, len(x)))].mean(axis=1)
    assert mean_ci(list(x))["ci95"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])), rel=1e-12)


def test_bootstrap_ci_of_a_proportion_is_the_binomial_interval():
    """Resampling nine 0s and one 1 gives a mean of Binomial(10, 0.1) / 10: the percentile interval is its
    2.5% and 97.5% quantiles (0 and 0.3; 0.2 and 0.3 are 6% of the mass apart, far beyond resampling noise)."""
    from scipy import stats

    expected = [float(q) / 10 for q in stats.binom.ppf([0.025, 0.975], 10, 0.1)]
    assert expected == [0.0, 0.3]
    assert mean_ci([0.0] * 9 + [1.0]) == {"mean": pytest.approx(0.1), "ci95": expected}


def _exact_sign_flip_p(d: list[float]) -> float:
    """Every one of the 2**n sign patterns: the share whose |mean| reaches the observed |mean|."""
    import itertools

    observed = abs(sum(d))
    hits = sum(
        abs(sum(s * v for s, v in zip(signs, d, strict=True))) >= observed - 1e-12
        for signs in itertools.product((1, -1), repeat=len(d))
    )
    return hits / 2 ** len(d)


def test_sign_flip_p_at_n_10_is_the_exact_permutation_p():
    # eighths: every partial sum is exact in binary, so no pattern sits on the boundary by rounding
    d = [0.375, -0.125, 0.5, 0.25, 0.625, -0.25, 0.125, 0.75, 0.375, -0.5]
    base = [0.25] * 10
    exact = _exact_sign_flip_p(d)
    assert 0.01 < exact < 0.2  # a p in the interesting range, not the trivial 2/1024
    assert paired_difference([b + v for b, v in zip(base, d, strict=True)], base)["p"] == pytest.approx(exact)


def test_differences_below_the_noise_floor_are_ties():
    """|model - base| < 1e-6 counts as 0: it neither wins nor loses a question."""
    base = [0.5] * 5
    tied = paired_difference([b + 5e-7 for b in base], base)
    assert tied == {"diff": 0.0, "ci95": [0.0, 0.0], "p": 1.0}
    above = paired_difference([b + 2e-6 for b in base], base)
    assert above["diff"] == pytest.approx(2e-6) and above["p"] == pytest.approx(2 / 32)
    # four clear wins and one difference of 3e-7: the fifth is a tie, so either of its signs is as extreme
    mixed = paired_difference([0.75, 0.75, 0.75, 0.75, 0.5 + 3e-7], base)
    assert mixed["diff"] == pytest.approx(0.2) and mixed["p"] == pytest.approx(_exact_sign_flip_p([1, 1, 1, 1, 0]))
    assert mixed["p"] == pytest.approx(4 / 32)


def test_declared_scipy_floor_has_the_rng_keyword():
    """compare.py passes `rng=` to scipy.stats.bootstrap and permutation_test (scipy >= 1.15)."""
    import re
    import tomllib
    from pathlib import Path

    from packaging.version import Version

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    (spec,) = [d for d in pyproject["project"]["dependencies"] if re.match(r"scipy\b", d)]
    floor = re.search(r">=\s*([\d.]+)", spec)
    assert floor and Version(floor.group(1)) >= Version("1.15"), spec
