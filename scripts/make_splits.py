"""Write nested, per-class stratified label-rate splits (SPEC §1.1 layout) from a train pool + val/test lists.

    python scripts/make_splits.py --pool data/finegym/gym99_train.csv --val data/finegym/gym99_val.csv \\
        --test data/finegym/gym99_test.csv --out data/finegym/gym99 --rates 5,10,20,100 --seed 0

Writes DIR/val.csv, DIR/test.csv, DIR/splits/<pct>/{train,unlabel}.csv and DIR/splits/splits.json.
Labeled clips per class: all at 100 %, else max(1, round-half-up(pct/100 * n)), capped at n, taken as a
prefix of one seeded per-class permutation (so 5 % ⊂ 10 % ⊂ 20 %). val and test must be different clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gym_qa.hierarchy import Hierarchy, HierarchyError
from gym_qa.lists import ListFileError
from gym_qa.splits import DEFAULT_RATES, SplitError, make_split_dir


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
    parser.add_argument("--val", required=True, type=Path, help="validation list file (checkpoint selection)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        num_classes = Hierarchy.from_finegym(args.categories).num_classes if args.categories else None
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
