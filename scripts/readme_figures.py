"""Write the README's quickstart figures from a quickstart run, so that they cannot drift from a measurement.

    python scripts/readme_figures.py --run runs/quickstart --gnu-time quickstart-time.log [more logs ...]
    python scripts/readme_figures.py --check        # README's block == the one docs/results/quickstart.json gives

From ``<run>/summary.json`` (the numbers of the run's report) and the GNU ``time -v`` output of fresh-clone
``make quickstart`` runs (wall clock and peak RSS, the venv install included), it writes
``docs/results/quickstart.json``, renders the README's block between its two marker comments from that file
alone, and copies the run's Gym-QA plot to ``docs/img/quickstart_gymqa.png``. ``--check`` renders the block
from the committed JSON and exits 1 when the README's differs (tests/test_readme_figures.py runs it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from mllm.gymqa_experiment import read_json
from mllm.quickstart_report import readme_block, readme_figures, replace_readme_block
from sefar_encoder.runtime.atomic import write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parent.parent
WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def parse_gnu_time(path: Path) -> dict[str, float]:
    """Wall minutes and peak RSS (GB) from the output of GNU ``time -v``; an error naming the file otherwise."""
    text = path.read_text(errors="replace")
    wall, rss = WALL.search(text), RSS.search(text)
    if wall is None or rss is None:
        raise SystemExit(
            f"{path}: no GNU time -v figures (Elapsed (wall clock) time, Maximum resident set size)"
        )
    hours, minutes, seconds = int(wall.group(1) or 0), int(wall.group(2)), float(wall.group(3))
    return {
        "wall_minutes": round(60 * hours + minutes + seconds / 60, 2),
        "peak_rss_gb": round(int(rss.group(1)) * 1024 / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--run", type=Path, help="a finished quickstart run folder (its summary.json and gymqa_accuracy.png)"
    )
    p.add_argument("--gnu-time", type=Path, nargs="*", default=[], help="GNU time -v outputs of fresh clones")
    p.add_argument(
        "--json", type=Path, default=REPO / "docs/results/quickstart.json", help="the figures file"
    )
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="the README holding the block")
    p.add_argument("--plot", type=Path, default=REPO / "docs/img/quickstart_gymqa.png", help="plot copy")
    p.add_argument("--check", action="store_true", help="only compare the README's block with --json's")
    args = p.parse_args(argv)
    readme = args.readme.read_text()
    if args.check:
        expected = replace_readme_block(readme, readme_block(read_json(args.json)))
        if expected != readme:
            print(f"{args.readme}: the quickstart block differs from {args.json}; run {Path(__file__).name}")
            return 1
        print(f"{args.readme}: the quickstart block matches {args.json}")
        return 0
    if args.run is None:
        p.error("give --run (or --check)")
    figures = readme_figures(read_json(args.run / "summary.json"), [parse_gnu_time(t) for t in args.gnu_time])
    write_json_atomic(args.json, figures)
    write_text_atomic(args.readme, replace_readme_block(readme, readme_block(figures)))
    shutil.copyfile(args.run / "gymqa_accuracy.png", args.plot)
    print(f"wrote {args.json}, the block in {args.readme} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
