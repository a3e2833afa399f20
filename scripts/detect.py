"""Find the elements of routine videos with a trained detector: segments with class and score.

    python scripts/detect.py routine.mp4 --detector runs/detector-tiny/detector --out segments.json
    python scripts/detect.py videos/ --detector runs/detector-tiny/detector --out segments.csv

Each video goes through the encoder the detector was trained on (its ``detector.json`` names it; ``--encoder``
overrides) in the same windows, then HAAN's clip logits and its detection rule
(sefar_encoder/detection/routine_detection.py, which the demo's routine tab calls too). ``--out`` ending in
``.json`` writes ActivityNet's results format with ``label_id`` and ``label``
(gym_qa/routine_annotations.py), ``.csv`` one row per segment: routine, start, end (seconds), label_id,
label, score, highest score first. Without ``--out`` the CSV rows are printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from gym_qa.detection_eval import Detection
from gym_qa.routine_annotations import detections_to_json
from sefar_encoder.clip_inputs import InputError, read_inputs
from sefar_encoder.decoding import DecodeError
from sefar_encoder.detection.features import FeatureFolderError, WindowEncoder
from sefar_encoder.detection.routine_detection import load_routine_detector
from sefar_encoder.runtime.atomic import write_text_atomic
from sefar_encoder.runtime.config import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("inputs", help="a routine video, a folder of videos or a list file")
    ap.add_argument("--detector", required=True, type=Path, help="detector export (<run>/detector)")
    ap.add_argument("--encoder", type=Path, default=None, help="encoder export (default: the detector's)")
    ap.add_argument("--out", type=Path, default=None, help="segments file, .json or .csv")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per encoder call")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.suffix not in (".json", ".csv"):
        ap.error(f"--out {args.out}: must end in .json or .csv")
    return args


def to_csv(detections: list[Detection], names: dict[str, list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["routine", "start", "end", "label_id", "label", "score"])
    for d in sorted(detections, key=lambda d: -d.score):
        writer.writerow(
            [d.video, f"{d.start:.3f}", f"{d.end:.3f}", d.label, names[str(d.label)][0], f"{d.score:.4f}"]
        )
    return buffer.getvalue()


def framepool_window_encoder(weights: str, frames: int) -> WindowEncoder:
    """The frame-pool baseline's window encoder, for a detector trained on its features."""
    from mllm.encoders.framepool import framepool_window_encoder as build  # only the baseline needs mllm

    return build(weights, frames)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        detector = load_routine_detector(args.detector, args.encoder, framepool=framepool_window_encoder)
        detections: list[Detection] = []
        for clip in read_inputs(args.inputs):
            detections += detector.detect(clip.path, clip.path.stem, args.batch_size)
    except (ConfigError, InputError, DecodeError, FeatureFolderError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    names = detector.meta["class_names"]
    if args.out is None:
        print(to_csv(detections, names), end="")
    elif args.out.suffix == ".csv":
        write_text_atomic(args.out, to_csv(detections, names))
    else:
        document = detections_to_json(detections)
        for items in document["results"].values():
            for item in items:
                item["label"] = names[str(item["label_id"])][0]
        write_text_atomic(args.out, json.dumps(document, indent=1) + "\n")
    if args.out is not None:
        print(f"{len(detections)} segments in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
