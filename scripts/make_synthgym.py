"""Generate a SynthGym data set (procedural gymnastics-like clips with FineGym-style metadata).

    python scripts/make_synthgym.py --out data/synthgym-tiny --preset tiny
    python scripts/make_synthgym.py --out data/synthgym-bench --preset bench --seed 0 --workers 2
    python scripts/make_synthgym.py --out data/synthgym-routines-tiny --routines tiny   # detection routines
    python scripts/make_synthgym.py --out data/synthgym-bench --add-rates 1 2            # 1 and 2 % label splits

See docs/synthgym.md for the data set layout, the world model and the augmentation rules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gym_qa.synthgym.dataset import PRESETS, add_label_rates, generate_dataset
from gym_qa.synthgym.nuisance import STYLES
from gym_qa.synthgym.render import CAMERAS
from gym_qa.synthgym.routines import ROUTINE_PRESETS, generate_routines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    sizes = "; ".join(
        f"{p.name}: {len(p.glabels)} classes, ~{p.pool_per_class}/class train pool, {p.val_per_class}/class val, "
        f"{p.test_per_class}/class test, {p.pretrain_clips} pretraining clips, {p.camera} camera, {p.style} style"
        + (f", element window >= {p.min_element_share:g} of a clip" if p.min_element_share else "")
        for p in PRESETS.values()
    )
    ap = argparse.ArgumentParser(
        description="Write a SynthGym data set: H.264 clips, val/test lists, nested 5/10/20/100 % label-rate "
        "splits, FineGym-style categories/element list/Qtree, meta.json, README.md, a contact "
        "sheet and a separately seeded frame-annotated pretraining split.",
        epilog=f"Presets — {sizes}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="output directory (created; existing files overwritten)"
    )
    ap.add_argument(
        "--preset", default="tiny", choices=sorted(PRESETS), help="data set size and class subset"
    )
    ap.add_argument("--seed", type=int, default=0, help="everything is a deterministic function of this seed")
    ap.add_argument(
        "--difficulty",
        type=float,
        default=1.0,
        help="nuisance strength: 0 = clean canonical clips, 1 = default, >1 harder",
    )
    ap.add_argument(
        "--camera",
        choices=CAMERAS,
        default=None,
        help="scene: the apparatus stays in view; athlete: a close-up that follows the athlete "
        "vertically too (about twice the athlete's size). Default: the preset's",
    )
    ap.add_argument(
        "--style",
        choices=STYLES,
        default=None,
        help="legible: every body part in its own fixed colour on a plain background; cluttered: random "
        "colours, clutter, wall gradient, stronger noise and compression. Default: the preset's",
    )
    ap.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=("W", "H"),
        help="frame size in pixels (even numbers, H.264 4:2:0)",
    )
    ap.add_argument(
        "--routines",
        choices=sorted(ROUTINE_PRESETS),
        default=None,
        help="write untrimmed routines for temporal element detection instead (docs/detection.md): "
        + "; ".join(
            f"{p.name}: {p.train}/{p.val}/{p.test} train/val/test routines of {p.elements[0]}-{p.elements[1]} "
            f"elements, {p.seconds[0]:g}-{p.seconds[1]:g} s, the {p.classes} preset's classes"
            for p in ROUTINE_PRESETS.values()
        )
        + ". --preset, --camera and --style do not apply",
    )
    ap.add_argument(
        "--add-rates",
        type=int,
        nargs="+",
        metavar="RATE",
        help="add label-rate splits (percent, e.g. 1 2) to the existing data set at --out, nested with its "
        "own (the generator's per-class order); nothing is rendered",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if any(v <= 0 or v % 2 for v in args.size):
        ap.error(
            f"--size {args.size[0]} {args.size[1]}: width and height must be positive even numbers (H.264 4:2:0)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate the data set; print a one-line JSON summary (the full one is ``<out>/meta.json``)."""
    args = parse_args(argv)
    start = time.time()
    common = {
        "seed": args.seed,
        "difficulty": args.difficulty,
        "workers": args.workers,
        "width": args.size[0],
        "height": args.size[1],
        "progress": not args.quiet,
    }
    if args.add_rates:
        counts = add_label_rates(args.out, tuple(args.add_rates))
        print(json.dumps({"out": str(args.out), "labeled": counts}))
        return 0
    if args.routines:
        meta = generate_routines(args.out, preset=args.routines, **common)
        summary = {k: v for k, v in meta.items() if k != "classes"}  # the class table is in meta.json
        print(json.dumps({"out": str(args.out), **summary, "wall_seconds": round(time.time() - start, 1)}))
        return 0
    meta = generate_dataset(args.out, preset=args.preset, camera=args.camera, style=args.style, **common)
    summary = {
        "out": str(args.out),
        "preset": args.preset,
        "style": meta["style"],
        "classes": meta["num_classes"],
        "frames_per_clip": meta["frames_per_clip"],
        "element_share": meta["element_share"],
        "sizes": meta["sizes"],
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
