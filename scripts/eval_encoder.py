"""Evaluate an exported SeFAR encoder on a list file: accuracy at element, set and event level.

    python scripts/eval_encoder.py --encoder runs/encoder-tiny/encoder \\
        --list data/synthgym-tiny/test.csv --out runs/eval-tiny/metrics.json
    python scripts/eval_encoder.py --encoder ... --data-root data/synthgym-tiny --list test.csv \\
        --views 4x3 --out ...                      # multi-view testing: 4 temporal clips x 3 crops

--encoder is a ``save_pretrained`` directory (``scripts/train_encoder.py`` writes ``<out_dir>/encoder``);
--list holds ``<path> <label>`` lines (paths relative to the list's folder). Multi-view testing averages
the softmax over ``--num-clips`` temporal offsets x ``--crops`` spatial crops per clip (``--views NxM``
sets both). Clips go through the training's eval pipeline with the preprocessing the export records (its
views, crop size and mean/std).

--out receives metrics.json: ``count``, ``top1``, ``top5``, ``mean_class`` (FineGym's usual metric);
``set`` and ``event`` (``top1``, ``mean_class``) from the hierarchy saved with the encoder;
``pairs_<kind>`` (e.g. ``pairs_direction``: forward vs backward salto, which member of each class pair
the model prefers) when the data root has a SynthGym ``meta.json``; ``most_confused``; ``skipped`` and
``decoder_fallbacks`` (clips decoded with PyAV because decord failed), each with the clips' names; and
``multi_view``. Next to it: ``<stem>.confusion.png`` (row-normalised confusion matrix).
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from pathlib import Path

import torch

from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.evaluation import NoClipsError, class_names, encoder_hierarchy, evaluate_list, read_pairs
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.report import plot_confusion
from sefar_encoder.runtime.atomic import write_json_atomic

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 4
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  every clip evaluated (with --on-bad-sample skip: every decodable clip; the rest are listed in
     metrics.json under "skipped" and counted on stderr)
  {EXIT_BAD_INPUT}  bad input: encoder directory that cannot be loaded, missing or malformed list file
     (file:line), label outside the encoder's classes, undecodable clips with --on-bad-sample error
     (every bad clip listed: file, list line, reason), no decodable clip at all, output not writable
  {EXIT_USAGE}  command-line usage error
  {EXIT_INTERNAL}  internal error (a bug): one line here, the traceback in <out>.error.log
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + EXIT_CODES,
    )
    p.add_argument(
        "--encoder", required=True, type=Path, help="encoder checkpoint (save_pretrained directory)"
    )
    p.add_argument(
        "--list", required=True, type=Path, help="list file; relative: to the cwd, else --data-root"
    )
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data set folder (meta.json: class pairs); default: list's",
    )
    p.add_argument("--num-clips", type=int, default=1, help="temporal offsets per clip (softmax averaged)")
    p.add_argument("--crops", type=int, default=1, choices=(1, 3), help="spatial crops per clip")
    p.add_argument("--views", default=None, help="multi-view testing as CLIPSxCROPS, e.g. 4x3")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding")
    p.add_argument("--backend", default="decord", choices=("decord", "pyav"), help="video decoder")
    p.add_argument(
        "--on-bad-sample",
        default="error",
        choices=("error", "skip"),
        help="undecodable clips: error = stop listing them all; skip = evaluate the rest and list them",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.views is not None:
        match = re.fullmatch(r"(\d+)[xX](\d+)", args.views)
        if not match or match.group(2) not in ("1", "3"):
            p.error(f"--views must be CLIPSxCROPS with 1 or 3 crops, e.g. 4x3; got {args.views!r}")
        args.num_clips, args.crops = int(match.group(1)), int(match.group(2))
    if args.num_clips < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--num-clips and --batch-size must be >= 1, --workers >= 0")
    if not args.list.is_file() and args.data_root is not None and not args.list.is_absolute():
        args.list = args.data_root / args.list
    return args


def run(args: argparse.Namespace) -> dict:
    """Evaluate, write metrics.json and the confusion PNG; returns the metrics."""
    try:
        encoder = SeFAREncoder.from_pretrained(args.encoder, map_location=args.device)
    except Exception as err:  # noqa: BLE001 - any failure to load the model is bad input (exit 1)
        raise EncoderLoadError(f"cannot load the encoder from {args.encoder}: {err}") from None
    pairs = read_pairs(args.data_root if args.data_root is not None else args.list.parent)
    report, cm = evaluate_list(
        encoder,
        args.list,
        num_clips=args.num_clips,
        crops=args.crops,
        batch_size=args.batch_size,
        num_workers=args.workers,
        backend=args.backend,
        on_bad_sample=args.on_bad_sample,
        pairs=pairs,
        device=args.device,
        progress=not args.quiet,
    )
    metrics = {"encoder": str(args.encoder), "list": str(args.list), **report}
    confusion_png = args.out.with_name(args.out.stem + ".confusion.png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_confusion(cm, class_names(encoder, encoder_hierarchy(encoder)), confusion_png)
    metrics["confusion_png"] = str(confusion_png)
    write_json_atomic(args.out, metrics)
    return metrics


class EncoderLoadError(RuntimeError):
    """The --encoder directory is not a loadable save_pretrained checkpoint."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = run(args)
    except (
        EncoderLoadError,
        HierarchyError,
        ListFileError,
        BadClipsError,
        DecodeError,
        NoClipsError,
        OSError,
    ) as err:
        print(f"eval_encoder: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback next to the output
        log = args.out.with_name(args.out.name + ".error.log")
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(traceback.format_exception(err)))
        except OSError:
            log = None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"eval_encoder: internal error {type(err).__name__}: {first} (traceback: {log})", file=sys.stderr
        )
        return EXIT_INTERNAL
    skipped = metrics["skipped"]["count"]
    print(
        f"eval_encoder: {metrics['count']} clips: top-1 {100 * metrics['top1']:.1f} %, top-5 "
        f"{100 * metrics['top5']:.1f} %, mean class {100 * metrics['mean_class']:.1f} %"
        + (f"; {skipped} undecodable clip(s) skipped (listed in {args.out})" if skipped else "")
        + f" -> {args.out}",
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
