"""Statistics behind the A/B verdict: median/quantiles, Mann-Whitney U, bootstrap CI, compare()."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from workbench.bench import stats


def test_median_and_quantile_match_numpy():
    rng = random.Random(3)
    for n in (1, 2, 5, 6, 31):
        values = [rng.uniform(0.5, 2.0) for _ in range(n)]
        assert stats.median(values) == pytest.approx(float(np.median(values)))
        for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0):
            assert stats.quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.quantile([1.0], 1.5)
    with pytest.raises(ValueError):
        stats.mann_whitney_u([], [1.0])


def test_mann_whitney_exact_values_by_hand():
    # Complete separation of 4 vs 4: only 2 of C(8,4)=70 splits are as extreme -> p = 2/70.
    u, p = stats.mann_whitney_u([1, 2, 3, 4], [5, 6, 7, 8])
    assert u == 0
    assert p == pytest.approx(2 / 70)
    # 3 vs 3 can never go below 2/20 = 0.1: why the bench asks for >= 4 repeats.
    assert stats.mann_whitney_u([1, 2, 3], [4, 5, 6])[1] == pytest.approx(0.1)
    assert stats.min_repeats_for(0.05) == 4
    # Identical samples: no evidence at all.
    assert stats.mann_whitney_u([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])[1] == pytest.approx(1.0)
    # Interleaved: U = n1*n2/2 -> p = 1.
    u, p = stats.mann_whitney_u([1, 4, 5, 8], [2, 3, 6, 7])
    assert u == 8 and p == pytest.approx(1.0)


def test_mann_whitney_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(11)
    for n1, n2 in ((4, 4), (5, 6), (7, 3)):  # exact branch, no ties
        a = [rng.gauss(0, 1) for _ in range(n1)]
        b = [rng.gauss(0.8, 1) for _ in range(n2)]
        ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="exact")
        u, p = stats.mann_whitney_u(a, b)
        assert u == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue)
    a = [round(rng.gauss(0, 1), 1) for _ in range(30)]  # normal approximation branch, with ties
    b = [round(rng.gauss(0.5, 1), 1) for _ in range(25)]
    ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    u, p = stats.mann_whitney_u(a, b)
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-6)


def test_bootstrap_ci_is_seeded_and_brackets_the_ratio():
    a = [100.0, 101.0, 99.0, 100.5, 100.2]
    b = [110.0, 111.0, 109.5, 110.4, 110.1]
    lo, hi = stats.bootstrap_ratio_ci(a, b)
    assert (lo, hi) == stats.bootstrap_ratio_ci(a, b)  # deterministic
    assert lo <= stats.median(b) / stats.median(a) <= hi
    assert lo > 1.0  # clearly faster arm: the CI excludes 1


def test_compare_separated_arms_is_significant_and_signed_by_direction():
    base = [1000.0, 1003.0, 998.0, 1001.0, 999.5]
    fast = [1100.0, 1098.0, 1102.0, 1101.0, 1099.0]
    c = stats.compare("tokens_per_second", base, fast, unit="tok/s", higher_is_better=True)
    assert c.significant and c.verdict == "custom faster"
    assert c.delta_pct == pytest.approx((1100.0 - 1000.0) / 1000.0 * 100)
    assert c.improvement_pct > 0
    # Latency: a higher custom median is worse.
    c = stats.compare("p50_s", [1.0, 1.01, 0.99, 1.0], [1.2, 1.21, 1.19, 1.2], unit="s", higher_is_better=False)
    assert c.significant and c.verdict == "custom slower" and c.improvement_pct < 0
    assert c.baseline_range == (0.99, 1.01)
    assert c.baseline_iqr[0] <= c.baseline_median <= c.baseline_iqr[1]


def test_compare_small_but_separated_delta_is_below_the_effect_floor():
    base = [100.0, 100.1, 100.2, 100.05, 100.15]
    c = stats.compare("tokens_per_second", base, [v * 1.01 for v in base])  # +1%, fully separated
    assert c.p_value < 0.05 and c.ratio_ci[0] > 1.0
    assert not c.significant and c.verdict == "within noise"
    assert stats.compare("tokens_per_second", base, [v * 1.01 for v in base], min_effect_pct=0.5).significant


def test_compare_overlapping_or_too_few_runs_is_within_noise():
    rng = random.Random(5)
    base = [rng.gauss(100, 3) for _ in range(6)]
    same = [rng.gauss(100, 3) for _ in range(6)]
    assert stats.compare("x", base, same).verdict == "within noise"
    # Perfectly separated but only 3 runs per arm: the test cannot reach 0.05, so no claim is made.
    c = stats.compare("x", [1.0, 1.1, 1.05], [2.0, 2.1, 2.05])
    assert not c.significant and c.p_value == pytest.approx(0.1)
    assert math.isfinite(c.delta_pct)
