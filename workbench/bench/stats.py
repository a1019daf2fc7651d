"""Small, dependency-free statistics for A/B benchmark runs: median, spread, Mann-Whitney U, bootstrap CI.

Why not scipy: the workbench must run on hosts with only the stdlib + numpy. The tests check these
functions against hand-computed values (and against scipy where it is installed).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def median(values: Sequence[float]) -> float:
    """Median (mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default 'linear' method), q in [0, 1]."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (ties share their mean rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of ``a``, p-value).

    Exact permutation p-value when the pooled sample is small (≤ 20 values: the usual 3–10 repeats
    per arm), else the normal approximation with tie and continuity corrections. With 3 runs per
    arm the smallest possible two-sided p is 0.1, so "significant at 0.05" needs ≥ 4 per arm.
    """
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs at least one value per sample")
    pooled = list(a) + list(b)
    ranks, ties = _ranks(pooled)
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2.0
    mean_u = n1 * n2 / 2.0
    if n1 + n2 <= 20:
        # Enumerate every split of the pooled ranks: exact even with ties (the ranks carry them).
        dist_extreme = 0
        total = 0
        observed = abs(u1 - mean_u)
        for idx in itertools.combinations(range(n1 + n2), n1):
            u = sum(ranks[i] for i in idx) - n1 * (n1 + 1) / 2.0
            total += 1
            if abs(u - mean_u) >= observed - 1e-9:
                dist_extreme += 1
        return u1, dist_extreme / total
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0:
        return u1, 1.0
    z = (abs(u1 - mean_u) - 0.5) / sigma
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


def bootstrap_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 4000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of median(b) / median(a), resampling each arm independently (seeded)."""
    if not a or not b:
        raise ValueError("bootstrap needs values in both samples")
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        ma = median([rng.choice(a) for _ in a])
        mb = median([rng.choice(b) for _ in b])
        ratios.append(mb / ma if ma else math.inf)
    tail = (1.0 - level) / 2.0
    return quantile(ratios, tail), quantile(ratios, 1.0 - tail)


@dataclass(frozen=True)
class Comparison:
    """Baseline vs custom for one metric. ``delta_pct`` is the change of the custom median vs baseline,
    ``improvement_pct`` the same signed so that positive means "custom is better"."""

    metric: str
    unit: str
    higher_is_better: bool
    n_baseline: int
    n_custom: int
    baseline_median: float
    custom_median: float
    baseline_iqr: tuple[float, float]
    custom_iqr: tuple[float, float]
    baseline_range: tuple[float, float]
    custom_range: tuple[float, float]
    delta_pct: float
    improvement_pct: float
    p_value: float
    ratio_ci: tuple[float, float]
    significant: bool
    verdict: str
    floor_pct: float = 2.0  # the smallest |delta| that counts (an A/A floor, or the default)


# Smallest median change reported as an effect. Measured: an A/A decode-proxy run on an H200 (both arms
# the same cuBLAS kernels, captured in separate CUDA graphs) differs by up to 1.4% with fully separated
# rounds, so smaller "significant" deltas are not evidence about the kernel.
MIN_EFFECT_PCT = 2.0


def compare(metric: str, baseline: Sequence[float], custom: Sequence[float], *, unit: str = "",
            higher_is_better: bool = True, alpha: float = 0.05, min_effect_pct: float = MIN_EFFECT_PCT) -> Comparison:
    """Compare two arms: medians, IQR and min/max, delta %, Mann-Whitney p and a bootstrap CI.

    The delta counts as beyond run-to-run noise only when all agree: p < alpha, the CI of the median
    ratio excludes 1, and |delta| >= ``min_effect_pct``. Otherwise the verdict is "within noise".
    """
    mb, mc = median(baseline), median(custom)
    delta = (mc - mb) / mb * 100.0 if mb else math.nan
    improvement = delta if higher_is_better else -delta
    _, p = mann_whitney_u(baseline, custom)
    lo, hi = bootstrap_ratio_ci(baseline, custom, level=1.0 - alpha)
    significant = p < alpha and (lo > 1.0 or hi < 1.0) and abs(delta) >= min_effect_pct
    verdict = ("custom faster" if improvement > 0 else "custom slower") if significant else "within noise"
    return Comparison(
        metric=metric, unit=unit, higher_is_better=higher_is_better,
        n_baseline=len(baseline), n_custom=len(custom),
        baseline_median=mb, custom_median=mc,
        baseline_iqr=(quantile(baseline, 0.25), quantile(baseline, 0.75)),
        custom_iqr=(quantile(custom, 0.25), quantile(custom, 0.75)),
        baseline_range=(min(baseline), max(baseline)), custom_range=(min(custom), max(custom)),
        delta_pct=delta, improvement_pct=improvement, p_value=p, ratio_ci=(lo, hi),
        significant=significant, verdict=verdict, floor_pct=min_effect_pct,
    )


def min_repeats_for(alpha: float = 0.05) -> int:
    """Smallest equal per-arm run count whose exact two-sided Mann-Whitney test can reach p < alpha."""
    for n in range(2, 11):
        if 2.0 / math.comb(2 * n, n) < alpha:
            return n
    return 10
