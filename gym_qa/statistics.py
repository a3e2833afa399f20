"""The two statistics Gym-QA needs, in pure Python: Wilson intervals for accuracies and a χ² uniformity test.

Kept dependency-free on purpose (no scipy): ``gym_qa`` sits at the bottom of the dependency graph and
both formulas are short closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # two-sided 95 % standard normal quantile


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when ``total`` is 0.

    Preferred over the normal ("Wald") interval because it stays inside [0, 1] and behaves at
    accuracies near 0 or 1 and for small per-set counts.
    """
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    z2 = z * z
    denom = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def chi_square_sf(statistic: float, df: int) -> float:
    """Survival function P(X ≥ statistic) of a χ² distribution with integer ``df`` ≥ 1.

    Closed forms of the regularised upper incomplete gamma Q(df/2, x/2): a finite Poisson sum for even
    ``df``; erfc plus a finite sum of half-integer terms for odd ``df``. Terms are built in log space so
    large statistics do not overflow.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if statistic <= 0:
        return 1.0
    half = statistic / 2
    if df % 2 == 0:
        total, log_term = 0.0, -half  # i = 0 term: e^{-x/2}
        for i in range(df // 2):
            if i > 0:
                log_term += math.log(half) - math.log(i)
            total += math.exp(log_term)
    else:
        total = math.erfc(math.sqrt(half))
        log_term = -half + 0.5 * math.log(half) - math.lgamma(1.5)  # (x/2)^{1/2} e^{-x/2} / Γ(3/2)
        for i in range(df // 2):
            if i > 0:
                log_term += math.log(half) - math.log(i + 0.5)
            total += math.exp(log_term)
    return min(1.0, max(0.0, total))


def chi_square_uniform(counts: Sequence[int]) -> tuple[float, float]:
    """Pearson χ² statistic and p-value of ``counts`` against equal expected counts (df = k − 1)."""
    k, n = len(counts), sum(counts)
    if k < 2 or n == 0:
        return 0.0, 1.0
    expected = n / k
    statistic = sum((c - expected) ** 2 / expected for c in counts)
    return statistic, chi_square_sf(statistic, k - 1)
