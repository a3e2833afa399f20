"""Sliding-window features of routine videos for the detector, from an exported SeFAR encoder or the
order-blind frame-pool baseline.

    python scripts/extract_routine_features.py --routines data/synthgym-routines-tiny/routines.json \\
        --encoder runs/quickstart/encoder --out data/synthgym-routines-tiny/features
    python scripts/extract_routine_features.py --routines data/synthgym-routines-tiny/routines.json \\
        --framepool data/synthgym-quickstart/backbones/<fp> --out data/synthgym-routines-tiny/features-framepool

Every routine of the routines file (all subsets) gets ``<out>/<routine_id>.npz``: the encoder's fused feature
``h`` of each window of ``--window`` frames every ``--stride`` frames (sefar_encoder/detection/features.py);
with ``--framepool`` instead, the frame backbone's features (``mllm.encoders`` ``framepool``: a SynthGym
backbone folder or timm weights) of the window's frames, averaged over time: the baseline the SeFAR
encoder's features are compared with.
A routine whose file exists is skipped, so an interrupted run continues; a folder made with another
encoder, window or stride is refused (use another ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gym_qa.routine_annotations import RoutineFileError, read_routines_json
from sefar_encoder.decoding import DecodeError
from sefar_encoder.detection.features import (
    FEATURES_META,
    FeatureFolderError,
    WindowEncoder,
    encode_routine,
    read_features_meta,
    sefar_window_encoder,
    write_features_meta,
    write_routine_features,
)
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.runtime.config import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--routines", required=True, type=Path, help="routines JSON (make_synthgym --routines, ...)"
    )
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", type=Path, help="exported SeFAR encoder folder (save_pretrained)")
    source.add_argument(
        "--framepool",
        metavar="WEIGHTS",
        help="frame-pool baseline: an image backbone (SynthGym backbone folder, timm name or weights file)",
    )
    ap.add_argument("--frames", type=int, default=8, help="with --framepool: frames per window")
    ap.add_argument("--out", required=True, type=Path, help="feature folder to fill")
    ap.add_argument(
        "--videos",
        type=Path,
        default=None,
        help="folder of <routine_id>.mp4 (default: each routine's 'video' field, relative to the routines file)",
    )
    ap.add_argument("--window", type=int, default=16, help="frames per window (HAAN on FineGym: 16)")
    ap.add_argument("--stride", type=int, default=8, help="frames between window starts")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per encoder call")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def window_encoder(args: argparse.Namespace) -> tuple[WindowEncoder, dict]:
    """The window encoder the arguments name, and how the feature folder records it (detect.py rebuilds
    it from that record)."""
    if args.encoder is not None:
        encoder = sefar_window_encoder(SeFAREncoder.from_pretrained(args.encoder))
        return encoder, {"encoder": str(args.encoder.resolve())}
    from mllm.encoders.framepool import framepool_window_encoder  # only the baseline needs the mllm stack

    weights = Path(args.framepool).resolve() if Path(args.framepool).exists() else args.framepool
    record = {"encoder": "framepool", "framepool_weights": str(weights), "framepool_frames": args.frames}
    return framepool_window_encoder(weights, args.frames), record


def feature_dim(encoder: WindowEncoder) -> int:
    """The feature width, from one window of zeros."""
    video = torch.zeros(1, 3, sum(encoder.views), encoder.image_size, encoder.image_size)
    with torch.no_grad():
        return int(encoder.encode(video).shape[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        routines, _ = read_routines_json(args.routines)
        encoder, record = window_encoder(args)
        meta = {
            **record,
            "window": args.window,
            "stride": args.stride,
            "feature_dim": feature_dim(encoder),
            "routines": str(args.routines.resolve()),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        if (args.out / FEATURES_META).is_file():
            old = read_features_meta(args.out)
            keys = ("encoder", "framepool_weights", "framepool_frames", "window", "stride", "feature_dim")
            differ = [k for k in keys if old.get(k) != meta.get(k)]
            if differ:
                raise FeatureFolderError(
                    f"{args.out}: made with other {', '.join(differ)}; use another --out"
                )
        write_features_meta(args.out, meta)
        todo = [r for r in routines if not (args.out / f"{r.routine_id}.npz").is_file()]
        for r in tqdm(todo, desc="routine features", unit="routine", disable=args.quiet):
            video = (
                args.videos / f"{r.routine_id}.mp4"
                if args.videos
                else args.routines.parent / r.extra.get("video", f"videos/{r.routine_id}.mp4")
            )
            write_routine_features(
                args.out,
                r.routine_id,
                encode_routine(encoder, video, args.window, args.stride, args.batch_size),
            )
    except (RoutineFileError, FeatureFolderError, DecodeError, ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{len(todo)} routines encoded ({len(routines) - len(todo)} already there) in {time.time() - start:.1f} s: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
