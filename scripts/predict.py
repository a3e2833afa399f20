"""Predict the element of every clip in a folder or list file with an exported SeFAR encoder, with an
uncertainty and an out-of-domain flag per clip.

    python scripts/predict.py --encoder runs/quickstart/encoder --inputs data/synthgym-tiny/videos \\
        --out runs/predict/predictions.jsonl [--csv] [--top-k 5]
    python scripts/predict.py --encoder ... --inputs data/synthgym-tiny/test.csv --out preds.jsonl
    python scripts/predict.py --encoder runs/quickstart/encoder --inputs data/synthgym-quickstart/val.csv \\
        --calibrate --reference data/synthgym-quickstart/splits/100/train.csv [--keep 0.95]

--inputs is a folder (its video files), one video file, or a list file with one ``<path>`` or
``<path> <label>`` per line (the SeFAR list format; paths relative to the list's folder). With labels,
each record says whether the top-1 is correct and the summary gives top-1 / top-k accuracy.

Output: one JSON object per input clip, in input order. A predicted clip::

    {"path": ..., "ok": true, "top_k": [{"label", "name", "probability", "set", "set_name", "event",
     "event_name"}, ...], "num_frames": 48, "frame_indices": [[view 0], [view 1], [view 2]],
     "out_of_domain": false, "uncertainty": {"score": "feature_distance", "value": 9.8, "threshold": 12.7,
     "scores": {"max_softmax", "energy", "dropout_std", "regulation_weight", "feature_distance"}},
     "label": 3, "correct": true, "in_top_k": true}          # the last three only with a labeled list

a clip that cannot be read: ``{"path": ..., "ok": false, "error": "cannot decode video (...)"}`` (also
printed to stderr). --csv also writes ``<out>.csv`` (same stem): path, ok, error, label, top1_label,
top1_name, top1_probability, set, set_name, event, event_name (the top-1's, as in its JSON record: set
id and name, event code and name), top_k_labels, top_k_names, top_k_probabilities (lists separated by
``|``), out_of_domain, ood_score, ood_value, ood_threshold (the flag, its score's name, value and
threshold; flag and threshold empty when uncalibrated).

Uncertainty (sefar_encoder/out_of_domain.py): every score grows as the clip looks less like the training
data; ``out_of_domain`` is true when the chosen score (``uncertainty.score``) is above the threshold the
encoder was calibrated with, ``null`` when the encoder has no calibration (``uncertainty.note`` says why).
--calibrate computes the thresholds: on the in-domain clips of --inputs (the encoder's val split), for
every score, the value that keeps --keep of them in domain, written to ``out_of_domain.json`` in the
encoder directory (or --calibration-out); --out is then optional. With --reference (in-domain training
clips, e.g. the whole train pool; labels unused) it first fits the Gaussian of the ``feature_distance``
score on their view features (``out_of_domain_features.safetensors``, beside it) and the flag uses that
score unless --ood-score says otherwise.

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
from sefar_encoder.out_of_domain import (
    DEFAULT_DROPOUT_SAMPLES,
    DEFAULT_KEEP,
    DEFAULT_SCORE,
    FEATURE_FILE,
    SCORES,
    OutOfDomainCalibration,
    calibrate,
)
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
    "out_of_domain",
    "ood_score",
    "ood_value",
    "ood_threshold",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Exit1ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoder", required=True, type=Path, help="encoder checkpoint (save_pretrained directory)"
    )
    p.add_argument("--inputs", required=True, type=Path, help="folder of clips, a video file, or a list file")
    p.add_argument("--out", type=Path, help="output JSON lines file (required unless --calibrate)")
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
    ood = p.add_argument_group("out-of-domain flag")
    ood.add_argument(
        "--calibrate",
        action="store_true",
        help="compute the thresholds from the in-domain clips of --inputs (the val split) and write them",
    )
    ood.add_argument(
        "--reference",
        type=Path,
        help="--calibrate: in-domain training clips (a list or folder) to fit the feature_distance Gaussian on",
    )
    ood.add_argument("--keep", type=float, default=DEFAULT_KEEP, help="--calibrate: fraction kept in domain")
    ood.add_argument(
        "--ood-score",
        choices=sorted(SCORES),
        help="the score the flag uses (default: the calibration's; --calibrate: feature_distance with "
        f"--reference, else {DEFAULT_SCORE})",
    )
    ood.add_argument(
        "--calibration-out",
        type=Path,
        help="--calibrate: write here instead of <encoder>/out_of_domain.json (a folder)",
    )
    ood.add_argument(
        "--dropout-samples",
        type=int,
        default=DEFAULT_DROPOUT_SAMPLES,
        help="K head-dropout samples of the dropout scores (a calibration applies only with its own K)",
    )
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0 or args.test_offsets < 1:
        p.error("--top-k, --batch-size and --test-offsets must be >= 1, --workers >= 0")
    if args.dropout_samples < 2:
        p.error("--dropout-samples must be >= 2 (a spread needs two samples)")
    if not 0.0 < args.keep <= 1.0:
        p.error("--keep must be in (0, 1]")
    if args.out is None and not args.calibrate:
        p.error("--out is required (unless --calibrate)")
    if args.reference is not None and not args.calibrate:
        p.error("--reference goes with --calibrate")
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
        **ood_columns(result),
    }


def ood_columns(result: ClipPrediction) -> dict[str, object]:
    """The CSV's out-of-domain columns (flag and threshold empty when uncalibrated)."""
    u = result.uncertainty
    if u is None:
        return {}
    return {
        "out_of_domain": "" if u.out_of_domain is None else u.out_of_domain,
        "ood_score": u.score,
        "ood_value": f"{u.value:.6f}",
        "ood_threshold": "" if u.threshold is None else f"{u.threshold:.6f}",
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
    flags = [r.out_of_domain for r in good if r.out_of_domain is not None]
    if flags:
        text += f"; {sum(flags)} flagged out of domain"
    return text


def write_calibration(
    predictor: Predictor, results: list[ClipPrediction | PredictionFailure], args: argparse.Namespace
) -> OutOfDomainCalibration:
    """Thresholds from the predicted clips' scores, written beside the encoder (or --calibration-out)."""
    good = [r for r in results if isinstance(r, ClipPrediction) and r.uncertainty is not None]
    if not good:
        raise ValueError("no clip could be predicted, so there is nothing to calibrate on")
    names = [
        name for name in SCORES if name in good[0].uncertainty.scores
    ]  # feature_distance: with a Gaussian
    with_features = predictor.features is not None
    if args.reference is not None:
        reference = str(args.reference)
    else:
        reference = f"the existing {FEATURE_FILE}" if with_features else ""
    calibration = calibrate(
        {name: [r.uncertainty.scores[name] for r in good] for name in names},
        keep=args.keep,
        score=args.ood_score or ("feature_distance" if args.reference is not None else DEFAULT_SCORE),
        inputs=str(args.inputs),
        reference=reference,
        test_offsets=args.test_offsets,
        test_crops=args.test_crops,
        dropout_samples=args.dropout_samples,
    )
    directory = args.calibration_out or args.encoder
    directory.mkdir(parents=True, exist_ok=True)
    calibration.save(directory)
    if with_features:
        predictor.features.save(directory)
    return calibration


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
            # --calibrate: the score is the calibration's to record (its Gaussian may not exist yet)
            ood_score=None if args.calibrate else args.ood_score,
            dropout_samples=args.dropout_samples,
        )
    except Exception as err:  # noqa: BLE001 - any failure to load the model is a model error (exit 1)
        print(f"predict: error: cannot load the encoder from {args.encoder}: {err}", file=sys.stderr)
        return EXIT_ERROR
    if predictor.top_k < args.top_k:
        print(
            f"predict: the encoder has {predictor.num_classes} classes; top-{predictor.top_k}",
            file=sys.stderr,
        )
    if args.reference is not None:
        try:
            gaussian, unread = predictor.fit_features(
                read_inputs(args.reference), batch_size=args.batch_size, num_workers=args.workers
            )
        except (InputError, ValueError) as err:
            print(f"predict: error: cannot fit the feature Gaussian: {err}", file=sys.stderr)
            return EXIT_ERROR
        for failure in unread:
            print(f"predict: bad reference clip {failure.path}: {failure.error}", file=sys.stderr)
        print(f"predict: feature Gaussian fitted on {gaussian.num_clips} reference views", file=sys.stderr)
    results = []
    for result in predictor.predict_many(
        clips, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet
    ):
        if isinstance(result, PredictionFailure):
            tqdm.write(f"predict: bad input {result.path}: {result.error}", file=sys.stderr)
        results.append(result)
    written = []
    try:
        if args.calibrate:
            try:
                calibration = write_calibration(predictor, results, args)
            except ValueError as err:
                print(f"predict: error: cannot calibrate: {err}", file=sys.stderr)
                return EXIT_ERROR
            written.append(Path(args.calibration_out or args.encoder) / "out_of_domain.json")
            thresholds = ", ".join(f"{k} {v:.4g}" for k, v in calibration.thresholds.items())
            print(
                f"predict: calibrated on {calibration.num_clips} clips, keeping {calibration.keep:.0%} in "
                f"domain: {thresholds}; the flag uses {calibration.score}",
                file=sys.stderr,
            )
        if args.out is not None:
            written += write_outputs(results, args.out, args.csv)
    except OSError as err:
        print(f"predict: error: cannot write {err.filename or args.out}: {err}", file=sys.stderr)
        return EXIT_ERROR
    if not args.calibrate:
        print(f"predict: out-of-domain flag {predictor.calibration_status}", file=sys.stderr)
    print(f"predict: {summary(results, predictor.top_k)} -> {', '.join(map(str, written))}", file=sys.stderr)
    return EXIT_BAD_INPUTS if any(isinstance(r, PredictionFailure) for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
