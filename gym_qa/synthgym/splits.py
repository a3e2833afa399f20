"""Label-rate splits of the train pool: stratified per class, nested across rates, seeded.

For each class the pool clips are put in one seeded random order; the labeled set at rate p is the
first ``k_c(p)`` clips of that order, with ``k_c(p) = max(1, round(p · n_c))`` (half rounded up) and
at most ``n_c - 1`` below 100 % so every rate keeps unlabeled clips. ``k_c`` grows with p, so the 5 %
set is a subset of the 10 % set, which is a subset of the 20 % set; every class with at least two
pool clips — in particular every class with ≥ 20 — has a labeled clip at every rate.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

RATES: tuple[int, ...] = (5, 10, 20, 100)


def labeled_count(n: int, percent: int) -> int:
    """Labeled clips of a class with ``n`` pool clips at ``percent``."""
    if percent >= 100:
        return n
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(n * percent / 100 + 0.5)))


def label_rate_splits(labels: list[int], seed: int, rates: tuple[int, ...] = RATES) -> dict[int, list[int]]:
    """Indices (into ``labels``) of the labeled set at each rate; the unlabeled set is the rest.

    ``labels``: class of every pool clip. Returns {rate: sorted indices}.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        by_class[c].append(i)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B]))
    order = {c: [idx[j] for j in rng.permutation(len(idx))] for c, idx in sorted(by_class.items())}
    return {
        p: sorted(i for c, idx in order.items() for i in idx[: labeled_count(len(idx), p)]) for p in rates
    }
