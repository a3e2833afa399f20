"""Write non-gymnastics clips in a SynthGym data set's look (empty scenes, a bouncing ball, sliding shapes,
an athlete standing still) and a list of them: the out-of-domain side of scripts/eval_out_of_domain.py.

    python scripts/make_non_gymnastics.py --like data/synthgym-quickstart --out data/non-gymnastics \\
        --count 96 --seed 1

--like takes frame size, camera, render style and difficulty from a data set's ``meta.json`` (or give them
with --size/--camera/--style/--difficulty). Output: ``<out>/videos/nongym_<kind>_<index>.mp4``,
``<out>/clips.csv`` (one path per line, no label: the SeFAR list format read by scripts/predict.py) and
``<out>/meta.json`` (the settings and one record per clip: kind, apparatus event, seed, frames). The kinds
take turns, so --count 96 gives 24 of each. See gym_qa/synthgym/non_gymnastics.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from gym_qa.atomic_files import write_text_atomic
from gym_qa.synthgym.non_gymnastics import KINDS, write_non_gymnastics
from gym_qa.synthgym.nuisance import STYLES
from gym_qa.synthgym.render import CAMERAS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder (created; files overwritten)")
    ap.add_argument("--count", type=int, default=96, help=f"clips to write, the kinds {KINDS} in turn")
    ap.add_argument("--seed", type=int, default=0, help="every clip is a deterministic function of it")
    ap.add_argument("--like", type=Path, help="a SynthGym data set folder whose meta.json gives the look")
    ap.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="frame size (default 64 64)")
    ap.add_argument("--camera", choices=CAMERAS, help="default: scene")
    ap.add_argument("--style", choices=STYLES, help="default: cluttered")
    ap.add_argument("--difficulty", type=float, help="nuisance strength (default 1)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be >= 1")
    look = {"size": [64, 64], "camera": "scene", "style": "cluttered", "difficulty": 1.0}
    if args.like is not None:
        meta_path = args.like / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            look = {k: meta[k] for k in ("camera", "style", "difficulty")} | {"size": meta["resolution"]}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            ap.error(f"{meta_path}: cannot read the data set's look ({type(err).__name__}: {err})")
    for key in look:
        if getattr(args, key) is not None:
            look[key] = getattr(args, key)
    if any(v <= 0 or v % 2 for v in look["size"]):
        ap.error(f"frame size {look['size']}: width and height must be positive even numbers (H.264 4:2:0)")
    args.look = look
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    look = args.look
    width, height = look["size"]
    records = write_non_gymnastics(
        args.out,
        args.count,
        seed=args.seed,
        width=width,
        height=height,
        camera=look["camera"],
        style=look["style"],
        difficulty=look["difficulty"],
    )
    base = args.out.resolve()
    lines = [os.path.relpath(Path(r["path"]).resolve(), base) + "\n" for r in records]
    write_text_atomic(args.out / "clips.csv", "".join(lines))
    meta = {
        "what": "non-gymnastics clips in the SynthGym look (gym_qa/synthgym/non_gymnastics.py)",
        "command": "python scripts/make_non_gymnastics.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "like": str(args.like) if args.like else None,
        **look,
        "kinds": dict(Counter(r["kind"] for r in records)),
        "clips": [{**r, "path": os.path.relpath(Path(r["path"]).resolve(), base)} for r in records],
    }
    write_text_atomic(args.out / "meta.json", json.dumps(meta, indent=1) + "\n")
    print(f"make_non_gymnastics: {len(records)} clips ({meta['kinds']}) -> {args.out / 'clips.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
