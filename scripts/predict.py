"""Predict the element of every clip in a folder or list file with an exported SeFAR encoder.

    python scripts/predict.py --encoder runs/quickstart/encoder --inputs data/synthgym-tiny/videos \\
        --out runs/predict/predictions.jsonl [--csv] [--top-k 5]
    python scripts/predict.py --encoder ... --inputs data/synthgym-tiny/test.csv --out preds.jsonl

--inputs is a folder (its video files), one video file, or a list file with one ``<path>`` or
``<path> <label>`` per line (the SeFAR list format; paths relative to the list's folder). With labels,
each record says whether the top-1 is correct and the summary gives top-1 / top-k accuracy.

Output: one JSON object per input clip, in input order. A predicted clip::

    {"path": ..., "ok": true, "top_k": [{"label", "name", "probability", "set", "set_name", "event",
     "event_name"}, ...], "num_frames": 48, "frame_indices": [[view 0], [view 1], [view 2]],
     "label": 3, "correct": true, "in_top_k": true}          # the last three only with a labeled list

a clip that cannot be read: ``{"path": ..., "ok": false, "error": "cannot decode video (...)"}`` (also
printed to stderr). --csv also writes ``<out>.csv`` (same stem): path, ok, error, label, top1_label,
top1_name, top1_probability, set, set_name, event, event_name (the top-1's, as in its JSON record: set
id and name, event code and name), top_k_labels, top_k_names, top_k_probabilities (lists separated by
``|``).

Exit codes: 0 every clip predicted; 2 some clips could not be read (every other clip is predicted and
the bad ones are listed with their error); 1 usage or model error (bad arguments, no inputs, malformed
list file, encoder checkpoint that cannot be loaded, output not writable).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gym_qa.atomic_files import atomic_replace
from sefar_encoder.clip_inputs import InputError, read_inputs
from sefar_encoder.command_line import Exit1ArgumentParser
from sefar_encoder.prediction import ClipPrediction, PredictionFailure, Predictor

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUTS = 0, 1, 2
CSV_FIELDS = (
    "path",
    "ok",
    "error",
    "label",
    "top1_label",
    "top1_name",
    "top1_probability",
    "set",
    "set_name",
    "event",
    "event_name",
    "top_k_labels",
    "top_k_names",
    "top_k_probabilities",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Exit1ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoder", required=True, type=Path, help="encoder checkpoint (save_pretrained directory)"
    )
    p.add_argument("--inputs", required=True, type=Path, help="folder of clips, a video file, or a list file")
    p.add_argument("--out", required=True, type=Path, help="output JSON lines file")
    p.add_argument("--csv", action="store_true", help="also write <out>.csv")
    p.add_argument("--top-k", type=int, default=5, help="classes per clip")
    p.add_argument("--recursive", action="store_true", help="with a folder: include sub-folders")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding")
    p.add_argument("--backend", default="decord", choices=("decord", "pyav"), help="video decoder")
    p.add_argument("--test-offsets", type=int, default=1, help="temporal offsets per clip (softmax averaged)")
    p.add_argument("--test-crops", type=int, default=1, choices=(1, 3), help="spatial crops per clip")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0 or args.test_offsets < 1:
        p.error("--top-k, --batch-size and --test-offsets must be >= 1, --workers >= 0")
    return args


def csv_row(result: ClipPrediction | PredictionFailure) -> dict[str, object]:
    if isinstance(result, PredictionFailure):
        return {"path": result.path, "ok": False, "error": result.error, "label": result.label}
    top = result.top1
    record = top.to_record()  # set and event columns hold what the JSON record holds under those keys
    return {
        "path": result.path,
        "ok": True,
        "error": "",
        "label": result.label,
        "top1_label": top.label,
        "top1_name": top.name,
        "top1_probability": f"{top.probability:.6f}",
        **{key: record[key] for key in ("set", "set_name", "event", "event_name")},
        "top_k_labels": "|".join(str(s.label) for s in result.top_k),
        "top_k_names": "|".join(s.name for s in result.top_k),
        "top_k_probabilities": "|".join(f"{s.probability:.6f}" for s in result.top_k),
    }


def write_outputs(results: list[ClipPrediction | PredictionFailure], out: Path, with_csv: bool) -> list[Path]:
    """Write the JSON lines (and CSV), each whole or not at all (never a half-written output)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_replace(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r.to_record(), ensure_ascii=False) + "\n" for r in results)
    written.append(out)
    if with_csv:
        csv_path = out.with_suffix(".csv")
        with atomic_replace(csv_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(csv_row(r) for r in results)
        written.append(csv_path)
    return written


def summary(results: list[ClipPrediction | PredictionFailure], top_k: int) -> str:
    good = [r for r in results if isinstance(r, ClipPrediction)]
    text = f"{len(good)} of {len(results)} clips predicted, {len(results) - len(good)} could not be read"
    labeled = [r for r in good if r.label is not None]
    if labeled:
        top1 = sum(bool(r.correct) for r in labeled) / len(labeled)
        topk = sum(any(s.label == r.label for s in r.top_k) for r in labeled) / len(labeled)
        text += f"; on {len(labeled)} labeled clips top-1 {top1:.1%}, top-{top_k} {topk:.1%}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        clips = read_inputs(args.inputs, recursive=args.recursive)
    except InputError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    try:
        predictor = Predictor(
            args.encoder,
            device=args.device,
            top_k=args.top_k,
            backend=args.backend,
            test_offsets=args.test_offsets,
            test_crops=args.test_crops,
        )
    except Exception as err:  # noqa: BLE001 - any failure to load the model is a model error (exit 1)
        print(f"predict: error: cannot load the encoder from {args.encoder}: {err}", file=sys.stderr)
        return EXIT_ERROR
    if predictor.top_k < args.top_k:
        print(
            f"predict: the encoder has {predictor.num_classes} classes; top-{predictor.top_k}",
            file=sys.stderr,
        )
    results = []
    for result in predictor.predict_many(
        clips, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet
    ):
        if isinstance(result, PredictionFailure):
            tqdm.write(f"predict: bad input {result.path}: {result.error}", file=sys.stderr)
        results.append(result)
    try:
        written = write_outputs(results, args.out, args.csv)
    except OSError as err:
        print(f"predict: error: cannot write {args.out}: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"predict: {summary(results, predictor.top_k)} -> {', '.join(map(str, written))}", file=sys.stderr)
    return EXIT_BAD_INPUTS if any(isinstance(r, PredictionFailure) for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
