"""Turn a FineGym (or SynthGym) element list plus a folder of trimmed clips into a list file.

    python scripts/ingest_finegym.py --elements gym_qa/data/finegym/gym99_val_element.txt \\
        --clips data/finegym/clips --out data/finegym/gym99_val.csv \\
        --categories gym_qa/data/finegym/gym99_categories.txt

Writes ``--out`` (``<path> <label>`` for every clip found) and ``--missing`` (default ``<out>.missing.txt``:
the element-list lines whose clip file is absent, with a count header). Exits 0 even when clips are
missing unless ``--fail-on-missing`` is given; malformed input exits 2 with the file and line.
FineGym's element lists and category files are packaged in ``gym_qa/data/finegym/``; --categories has no
default because the right file depends on the element list (gym99 or gym288).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gym_qa.clips import ClipError
from gym_qa.finegym import ingest, write_ingest_outputs
from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--elements",
        required=True,
        type=Path,
        help="element list: '<clip_id> <label>' per line (FineGym *_element*.txt)",
    )
    parser.add_argument("--clips", required=True, type=Path, help="folder holding <clip_id>.mp4 (or .mkv, …)")
    parser.add_argument("--out", required=True, type=Path, help="list file to write for the clips found")
    parser.add_argument(
        "--missing", type=Path, default=None, help="where to list missing clips (default: <out>.missing.txt)"
    )
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="categories file (gymNN_categories.txt); when given, labels are range-checked",
    )
    parser.add_argument("--recursive", action="store_true", help="also search sub-folders of --clips")
    parser.add_argument(
        "--absolute",
        action="store_true",
        help="write absolute clip paths (default: relative to the list's folder)",
    )
    parser.add_argument("--fail-on-missing", action="store_true", help="exit 1 when any clip is missing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing_file = args.missing or args.out.with_name(args.out.name + ".missing.txt")
    try:
        num_classes = Hierarchy.from_finegym(args.categories).num_classes if args.categories else None
        result = ingest(args.elements, args.clips, num_classes=num_classes, recursive=args.recursive)
        write_ingest_outputs(result, args.out, missing_file, relative=not args.absolute)
    except (ListFileError, HierarchyError, ClipError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(result.present)} of {result.total} clips found -> {args.out}")
    print(f"{len(result.missing)} missing -> {missing_file}")
    if result.missing and args.fail_on_missing:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
