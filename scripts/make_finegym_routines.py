"""Rebuild FineGym's routines from its public element lists: the ground truth of element detection.

    python scripts/make_finegym_routines.py --out data/finegym-routines/gym99_routines.json
    python scripts/make_finegym_routines.py --task gym288 --out data/finegym-routines/gym288_routines.json

Writes the ActivityNet-style routines JSON (gym_qa/routine_annotations.py) and prints the counts (routines
per subset, segments per routine, durations). See gym_qa/finegym_routines.py for how the ``E``/``A`` spans
are read and docs/detection.md for the counts measured on the packaged lists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gym_qa.finegym import metadata_path
from gym_qa.finegym_routines import build_finegym_routines, class_names
from gym_qa.routine_annotations import write_routines_json

ELEMENT_LISTS = {
    "gym99": ("gym99_train_element_v1.1.txt", "gym99_val_element.txt"),
    "gym288": ("gym288_train_element_v1.1.txt", "gym288_val_element.txt"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Group FineGym element clips into routines (one per YouTube id and event span) and write "
        "them as an ActivityNet-style JSON: per routine its subset, duration and element segments in "
        "seconds from the routine's start, with element, set and event labels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", required=True, type=Path, help="routines JSON to write (folders created)")
    ap.add_argument("--task", choices=sorted(ELEMENT_LISTS), default="gym99", help="FineGym label space")
    ap.add_argument(
        "--train-list", type=Path, help="element list of the training routines (default: packaged)"
    )
    ap.add_argument(
        "--val-list", type=Path, help="element list of the validation routines (default: packaged)"
    )
    ap.add_argument("--categories", type=Path, help="categories file (default: the task's packaged one)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train_name, val_name = ELEMENT_LISTS[args.task]
    lists = {
        "training": args.train_list or metadata_path(train_name),
        "validation": args.val_list or metadata_path(val_name),
    }
    categories = args.categories or metadata_path(f"{args.task}_categories.txt")
    try:
        routines, counts = build_finegym_routines(lists, categories)
    except ValueError as err:  # ListFileError and HierarchyError are ValueErrors naming file and line
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    source = f"FineGym {args.task}: " + ", ".join(f"{k}={Path(v).name}" for k, v in lists.items())
    write_routines_json(args.out, routines, class_names(categories), source)
    print(json.dumps(counts.to_json(), indent=1))
    print(f"wrote {len(routines)} routines to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
