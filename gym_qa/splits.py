"""Label-rate splits: which clips of a train pool are labeled at 5 / 10 / 20 / 100 %
(docs/DESIGN.md §List files and splits).

Output layout of :func:`write_split_dir`::

    DIR/val.csv  DIR/test.csv                      copies of the val/test lists (never the same clips)
    DIR/splits/<pct>/train.csv                     labeled clips at that rate
    DIR/splits/<pct>/unlabel.csv                   the rest of the pool (empty at 100 %)
    DIR/splits/splits.json                         seed, rule and counts, so the split is self-describing

Rule (per class ``c`` with ``n_c`` pool clips, rate ``r`` in percent)::

    k_c(r) = n_c                                          if r == 100
           = min(n_c, max(1, floor(r/100 * n_c + 1/2)))   if n_c > 0   (round half up, at least one)

and the labeled clips of class ``c`` are the first ``k_c(r)`` of one seeded permutation of that
class's clips. Consequences: splits are stratified per class; *nested* (``k_c`` grows with ``r`` and
every rate takes a prefix of the same permutation, so 5 % ⊂ 10 % ⊂ 20 %); every class present in the
pool has a labeled clip at every rate (a class with ≥ 20 clips would get one from rounding alone, the
minimum of one extends this to rare classes, so the realised rate differs slightly from ``r`` —
reported in ``splits.json``); deterministic for a given pool order and seed; and a class's
selection does not depend on the other classes (each class has its own random stream).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from gym_qa.lists import ListEntry, ListFileError, check_disjoint, read_list, write_list

DEFAULT_RATES: tuple[float, ...] = (5, 10, 20, 100)
SPLIT_RULE = (
    "k_c = n_c at 100 %, else min(n_c, max(1, floor(r/100 * n_c + 0.5))); prefix of a per-class permutation"
)


class SplitError(ValueError):
    """Inputs that cannot make a valid split (bad rates, val == test, duplicated clips…)."""


class _Labeled(Protocol):
    label: int


def labeled_count(n: int, rate: float) -> int:
    """How many of a class's ``n`` pool clips are labeled at ``rate`` percent (see module docstring)."""
    if n <= 0:
        return 0
    if rate >= 100:
        return n
    return min(n, max(1, math.floor(rate / 100 * n + 0.5)))


def _check_rates(rates: Iterable[float]) -> list[float]:
    checked = sorted(set(rates))
    if not checked:
        raise SplitError("no label rates given")
    for rate in checked:
        if not 0 < rate <= 100:
            raise SplitError(f"label rate {rate} is not in (0, 100] percent")
    return checked


def build_label_splits(
    entries: Sequence[int | _Labeled], rates: Iterable[float] = DEFAULT_RATES, seed: int = 0
) -> dict[float, list[int]]:
    """Indices (into ``entries``, ascending) of the labeled clips at each rate.

    ``entries`` are labels or objects with a ``.label`` (e.g. :class:`~gym_qa.lists.ListEntry`); rates
    are percentages. The result is keyed by the given rate values.
    """
    checked = _check_rates(rates)
    by_class: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        label = entry if isinstance(entry, int) else entry.label
        by_class.setdefault(int(label), []).append(index)
    # One independent, seeded stream per class, so adding or removing a class leaves the others' picks
    # unchanged. A string seed is hashed with SHA-512 by `random`, stable across runs and platforms.
    orders: dict[int, list[int]] = {}
    for label, indices in by_class.items():
        order = list(indices)
        random.Random(f"sefar-label-splits:{seed}:{label}").shuffle(order)
        orders[label] = order
    splits: dict[float, list[int]] = {}
    for rate in checked:
        chosen = [i for label, order in orders.items() for i in order[: labeled_count(len(order), rate)]]
        splits[rate] = sorted(chosen)
    return splits


def format_rate(rate: float) -> str:
    """Directory name of a rate: ``5`` → "5", ``2.5`` → "2.5"."""
    return str(int(rate)) if float(rate).is_integer() else str(rate)


def _check_no_duplicates(entries: list[ListEntry], source: str) -> None:
    first: dict[Path, int] = {}
    for entry in entries:
        key = entry.path.resolve()
        if key in first:
            raise SplitError(
                f"{source}:{entry.line}: clip {entry.raw_path} already listed at line {first[key]}"
            )
        first[key] = entry.line


def write_split_dir(
    out_dir: str | Path,
    pool: list[ListEntry],
    val: list[ListEntry],
    test: list[ListEntry],
    rates: Iterable[float] = DEFAULT_RATES,
    seed: int = 0,
    relative: bool = True,
) -> dict[str, Any]:
    """Write the data set layout for a train pool and separate val/test lists; returns the summary.

    Raises :class:`SplitError` or :class:`~gym_qa.lists.ListFileError` when a clip is listed twice or
    appears in two of pool/val/test.
    """
    check_disjoint(train_pool=pool, val=val, test=test)
    for name, entries in (("train pool", pool), ("val", val), ("test", test)):
        _check_no_duplicates(entries, name)
    out_dir = Path(out_dir)
    write_list(out_dir / "val.csv", [(e.path, e.label) for e in val], relative=relative)
    write_list(out_dir / "test.csv", [(e.path, e.label) for e in test], relative=relative)
    splits = build_label_splits(pool, rates, seed)
    num_classes_in_pool = len({e.label for e in pool})
    summary: dict[str, Any] = {
        "seed": seed,
        "rule": SPLIT_RULE,
        "pool": len(pool),
        "val": len(val),
        "test": len(test),
        "classes_in_pool": num_classes_in_pool,
        "rates": {},
    }
    for rate, labeled in splits.items():
        chosen = set(labeled)
        rate_dir = out_dir / "splits" / format_rate(rate)
        write_list(
            rate_dir / "train.csv", [(pool[i].path, pool[i].label) for i in labeled], relative=relative
        )
        write_list(
            rate_dir / "unlabel.csv",
            [(e.path, e.label) for i, e in enumerate(pool) if i not in chosen],
            relative=relative,
        )
        summary["rates"][format_rate(rate)] = {
            "labeled": len(labeled),
            "unlabeled": len(pool) - len(labeled),
            "realised_percent": round(100 * len(labeled) / len(pool), 3) if pool else 0.0,
            "classes_labeled": len({pool[i].label for i in labeled}),
        }
    summary_path = out_dir / "splits" / "splits.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def make_split_dir(
    out_dir: str | Path,
    pool_list: str | Path,
    val_list: str | Path,
    test_list: str | Path,
    rates: Iterable[float] = DEFAULT_RATES,
    seed: int = 0,
    num_classes: int | None = None,
    relative: bool = True,
) -> dict[str, Any]:
    """Read the three list files and :func:`write_split_dir`; refuses val and test being one file.

    The official SeFAR lists use the test list as val; selecting checkpoints on test inflates the
    reported number, so a separate val list is required here.
    """
    val_path, test_path = Path(val_list), Path(test_list)
    if val_path.is_file() and test_path.is_file() and val_path.resolve() == test_path.resolve():
        raise SplitError(f"val and test are the same file ({val_path}); give a separate val list")
    pool = read_list(pool_list, num_classes)
    val = read_list(val_path, num_classes)
    test = read_list(test_path, num_classes)
    if not pool:
        raise SplitError(f"{pool_list}: the train pool is empty")
    for entries, source in ((pool, pool_list), (val, val_path), (test, test_path)):
        _check_no_duplicates(entries, str(source))  # here, to name the file rather than the role
    try:
        return write_split_dir(out_dir, pool, val, test, rates, seed, relative)
    except ListFileError as err:
        raise SplitError(f"{err} (pool {pool_list}, val {val_list}, test {test_list})") from None
