"""Write nested, per-class stratified label-rate splits from a train pool + val/test lists
(docs/DESIGN.md §List files and splits).

    python scripts/make_splits.py --pool data/finegym/gym99_train.csv --val data/finegym/gym99_val.csv \\
        --test data/finegym/gym99_test.csv --out data/finegym/gym99 --rates 5,10,20,100 --seed 0

    # FineGym has no val list (its val list is the test set): hold 10 % of the train list out as val
    python scripts/make_splits.py --pool data/finegym/gym99_train.csv --holdout 10 \\
        --test data/finegym/gym99_val.csv --out data/finegym/gym99 --seed 0

Writes DIR/val.csv, DIR/test.csv, DIR/splits/<pct>/{train,unlabel}.csv and DIR/splits/splits.json.
Labeled clips per class: all at 100 %, else max(1, round-half-up(pct/100 * n)), capped at n, taken as a
prefix of one seeded per-class permutation (so 5 % ⊂ 10 % ⊂ 20 %). val and test must be different clips.

--holdout P replaces --val: per class with n >= 2 pool clips, min(n - 1, max(1, round-half-up(P/100 * n)))
clips (a prefix of a seeded per-class permutation, a stream of its own) become val and leave the pool
before the label-rate splits are drawn; a class with one clip keeps it in the pool. splits.json records
it under "val_holdout". Val stays separate from test (docs/DESIGN.md §Val is not test): checkpoints are
selected on it.
Exit codes: 0 done; 2 bad input (list files, rates, holdout, overlapping or duplicated clips).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListEntry, ListFileError, read_list
from gym_qa.splits import DEFAULT_RATES, SplitError, make_split_dir, write_split_dir

HOLDOUT_RULE = (
    "h_c = 0 if n_c < 2 else min(n_c - 1, max(1, floor(P/100 * n_c + 0.5))); per-class permutation prefix"
)


def _rates(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be comma-separated numbers, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", required=True, type=Path, help="train-pool list file ('<path> <label>')")
    val = parser.add_mutually_exclusive_group(required=True)
    val.add_argument("--val", type=Path, help="validation list file (checkpoint selection)")
    val.add_argument(
        "--holdout",
        type=float,
        metavar="P",
        help="no val list: hold P %% of each class of the pool out as val (e.g. 10 for FineGym)",
    )
    parser.add_argument("--test", required=True, type=Path, help="test list file (reported once)")
    parser.add_argument("--out", required=True, type=Path, help="data set directory to write")
    parser.add_argument(
        "--rates",
        type=_rates,
        default=list(DEFAULT_RATES),
        help="label rates in percent, comma-separated (default: 5,10,20,100)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-class permutations")
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="categories file; when given, labels are range-checked against it",
    )
    parser.add_argument(
        "--absolute",
        action="store_true",
        help="write absolute clip paths (default: relative to each list's folder)",
    )
    return parser.parse_args(argv)


def holdout_count(n: int, percent: float) -> int:
    """Val clips held out of a class with ``n`` pool clips (see the module docstring)."""
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(percent / 100 * n + 0.5)))


def split_holdout(
    pool: list[ListEntry], percent: float, seed: int
) -> tuple[list[ListEntry], list[ListEntry]]:
    """``(rest of the pool, val)``, both in pool order; stratified per class, deterministic for a seed."""
    if not 0 < percent < 100:
        raise SplitError(f"--holdout {percent} is not in (0, 100) percent")
    by_class: dict[int, list[int]] = {}
    for index, entry in enumerate(pool):
        by_class.setdefault(entry.label, []).append(index)
    held: set[int] = set()
    for label, indices in by_class.items():
        order = list(indices)
        # Its own stream: the label-rate splits' permutations (gym_qa.splits) stay independent of it.
        random.Random(f"sefar-val-holdout:{seed}:{label}").shuffle(order)
        held.update(order[: holdout_count(len(order), percent)])
    return [e for i, e in enumerate(pool) if i not in held], [e for i, e in enumerate(pool) if i in held]


def make_holdout_split_dir(args: argparse.Namespace, num_classes: int | None) -> dict:
    """Carve val out of ``args.pool`` and write the split directory around the rest."""
    pool, val = split_holdout(read_list(args.pool, num_classes), args.holdout, args.seed)
    if not val:
        raise SplitError(f"{args.pool}: --holdout {args.holdout} holds out nothing (no class has 2 clips)")
    test = read_list(args.test, num_classes)
    try:
        summary = write_split_dir(args.out, pool, val, test, args.rates, args.seed, not args.absolute)
    except ListFileError as err:
        raise SplitError(f"{err} (pool {args.pool}, test {args.test})") from None
    summary["val_holdout"] = {
        "percent": args.holdout,
        "from": str(args.pool),
        "seed": args.seed,
        "rule": HOLDOUT_RULE,
        "classes": len({e.label for e in val}),
    }
    path = Path(args.out) / "splits" / "splits.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        num_classes = Hierarchy.from_finegym(args.categories).num_classes if args.categories else None
        if args.holdout is not None:
            summary = make_holdout_split_dir(args, num_classes)
        else:
            summary = make_split_dir(
                args.out,
                args.pool,
                args.val,
                args.test,
                rates=args.rates,
                seed=args.seed,
                num_classes=num_classes,
                relative=not args.absolute,
            )
    except (ListFileError, HierarchyError, SplitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
