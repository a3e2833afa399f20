"""How well the encoder's uncertainty scores tell in-domain clips from clips of something else: AUROC of
every score of sefar_encoder/out_of_domain.py, and what the calibrated out-of-domain flag catches.

    python scripts/make_non_gymnastics.py --like data/synthgym-quickstart --out data/non-gymnastics-sel --seed 0
    python scripts/make_non_gymnastics.py --like data/synthgym-quickstart --out data/non-gymnastics --seed 1
    python scripts/predict.py --encoder runs/quickstart/encoder --inputs data/synthgym-quickstart/val.csv \\
        --calibrate --reference data/synthgym-quickstart/splits/100/train.csv
    python scripts/eval_out_of_domain.py --encoder runs/quickstart/encoder \\
        --in-domain data/synthgym-quickstart/test.csv --out-of-domain data/non-gymnastics/clips.csv \\
        --select-in data/synthgym-quickstart/val.csv --select-out data/non-gymnastics-sel/clips.csv \\
        --out docs/results/ood.json

AUROC is the probability that a random out-of-domain clip scores higher than a random in-domain one (ties
count half): 0.5 is chance, 1 a perfect separation; its 95 % interval comes from 1000 bootstrap resamples
of the clips. With --select-in/--select-out the score with the best
AUROC on that pair (the val split and separately seeded non-gymnastics clips) is the one the result names
as chosen, so the choice is not made on the clips it is then measured on. Per kind of non-gymnastics clip
(file names of scripts/make_non_gymnastics.py) the AUROC and the flagged fraction are reported too. With a
calibration beside the encoder (``predict.py --calibrate``), the fractions of clips each score's threshold
flags: in domain that is the false-alarm rate (about 1 - keep if test looks like val), out of domain the
detection rate.

Exit codes: 0 done; 1 usage or model error; 2 some clips could not be read (left out of the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gym_qa.synthgym.non_gymnastics import kind_of
from sefar_encoder.clip_inputs import InputError, read_inputs
from sefar_encoder.command_line import Exit1ArgumentParser
from sefar_encoder.out_of_domain import SCORES, auroc
from sefar_encoder.prediction import ClipPrediction, Predictor
from sefar_encoder.runtime.atomic import write_text_atomic

TARGET_AUROC = 0.9  # issue 18, point 11


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Exit1ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, type=Path, help="encoder export (save_pretrained directory)")
    p.add_argument("--in-domain", required=True, type=Path, help="list of in-domain clips (the test split)")
    p.add_argument("--out-of-domain", required=True, type=Path, help="list of out-of-domain clips")
    p.add_argument("--select-in", type=Path, help="in-domain clips the score is chosen on (the val split)")
    p.add_argument("--select-out", type=Path, help="out-of-domain clips the score is chosen on")
    p.add_argument("--out", required=True, type=Path, help="result JSON")
    p.add_argument(
        "--entry",
        help="write the result under this key of --out, keeping the file's other entries (one per encoder)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = p.parse_args(argv)
    if (args.select_in is None) != (args.select_out is None):
        p.error("--select-in and --select-out go together")
    return args


def predict_list(predictor: Predictor, source: Path, batch_size: int) -> tuple[list[ClipPrediction], int]:
    """The predictions of a list's clips and how many could not be read."""
    results = list(predictor.predict_many(read_inputs(source), batch_size=batch_size))
    good = [r for r in results if isinstance(r, ClipPrediction)]
    for r in results:
        if not isinstance(r, ClipPrediction):
            print(f"eval_out_of_domain: bad input {r.path}: {r.error}", file=sys.stderr)
    return good, len(results) - len(good)


def scores_of(predictions: list[ClipPrediction]) -> dict[str, np.ndarray]:
    """Each score's values over the clips (feature_distance only with the encoder's feature Gaussian)."""
    names = [name for name in SCORES if name in predictions[0].uncertainty.scores]
    return {name: np.array([p.uncertainty.scores[name] for p in predictions]) for name in names}


def bootstrap_interval(
    inside: np.ndarray, outside: np.ndarray, resamples: int = 1000, seed: int = 0
) -> list[float]:
    """95 % percentile interval of the AUROC over clips resampled with replacement on both sides."""
    rng = np.random.default_rng(seed)
    values = [
        auroc(rng.choice(inside, inside.size), rng.choice(outside, outside.size)) for _ in range(resamples)
    ]
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def separation(inside: list[ClipPrediction], outside: list[ClipPrediction]) -> dict:
    """AUROC per score (with a bootstrap interval), overall and per kind of out-of-domain clip."""
    s_in, s_out = scores_of(inside), scores_of(outside)
    kinds = sorted({kind_of(p.path) or "other" for p in outside})
    by_kind = {}
    for kind in kinds:
        chosen = [p for p in outside if (kind_of(p.path) or "other") == kind]
        by_kind[kind] = {name: round(auroc(s_in[name], v), 4) for name, v in scores_of(chosen).items()}
    return {
        "clips": {"in_domain": len(inside), "out_of_domain": len(outside)},
        "auroc": {name: round(auroc(s_in[name], s_out[name]), 4) for name in s_in},
        "auroc_95_interval": {name: bootstrap_interval(s_in[name], s_out[name]) for name in s_in},
        "auroc_by_kind": by_kind,
    }


def flagged(predictor: Predictor, inside: list[ClipPrediction], outside: list[ClipPrediction]) -> dict | None:
    """Per score: the fraction of clips above the calibrated threshold, in domain and per kind outside."""
    calibration = predictor.calibration
    if calibration is None:
        return None
    s_in, s_out = scores_of(inside), scores_of(outside)
    kinds = np.array([kind_of(p.path) or "other" for p in outside])
    rates = {}
    for name, threshold in ((n, t) for n, t in calibration.thresholds.items() if n in s_in):
        rates[name] = {
            "threshold": round(threshold, 6),
            "in_domain_flagged": round(float((s_in[name] > threshold).mean()), 4),
            "out_of_domain_flagged": round(float((s_out[name] > threshold).mean()), 4),
            "by_kind": {
                k: round(float((s_out[name][kinds == k] > threshold).mean()), 4) for k in sorted(set(kinds))
            },
        }
    return {
        "status": predictor.calibration_status,
        "inputs": calibration.inputs,
        "num_clips": calibration.num_clips,
        "keep": calibration.keep,
        "score": calibration.score,
        "rates": rates,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        predictor = Predictor(args.encoder, device=args.device)
    except Exception as err:  # noqa: BLE001 - any failure to load the model is a model error (exit 1)
        print(
            f"eval_out_of_domain: error: cannot load the encoder from {args.encoder}: {err}", file=sys.stderr
        )
        return 1
    pairs = {"measured": (args.in_domain, args.out_of_domain)}
    if args.select_in is not None:
        pairs["selection"] = (args.select_in, args.select_out)
    predictions, unreadable = {}, 0
    try:
        for role, (inside, outside) in pairs.items():
            predictions[role] = []
            for source in (inside, outside):
                good, bad = predict_list(predictor, source, args.batch_size)
                predictions[role].append(good)
                unreadable += bad
    except InputError as err:
        print(f"eval_out_of_domain: error: {err}", file=sys.stderr)
        return 1
    if any(not side for role in predictions.values() for side in role):
        print("eval_out_of_domain: error: a list has no readable clip", file=sys.stderr)
        return 1
    inside, outside = predictions["measured"]
    labeled = [p for p in inside if p.label is not None]
    result: dict = {
        "what": "out-of-domain scores of the encoder: SynthGym clips (in domain) vs non-gymnastics clips",
        "command": "python scripts/eval_out_of_domain.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "encoder": str(args.encoder),
        "in_domain": str(args.in_domain),
        "out_of_domain": str(args.out_of_domain),
        "scores": SCORES,
        "target_auroc": TARGET_AUROC,
        "measured": separation(inside, outside),
        "in_domain_top1": round(sum(bool(p.correct) for p in labeled) / len(labeled), 4) if labeled else None,
        "unreadable_clips": unreadable,
    }
    if "selection" in predictions:
        selection = separation(*predictions["selection"])
        selection["lists"] = [str(args.select_in), str(args.select_out)]
        chosen = max(selection["auroc"], key=lambda name: selection["auroc"][name])
        result["selection"] = selection
        result["chosen_score"] = chosen
        result["chosen_auroc"] = result["measured"]["auroc"][chosen]
        result["target_met"] = result["chosen_auroc"] >= TARGET_AUROC
    result["flag"] = flagged(predictor, inside, outside)
    result["machine"] = {
        "device": str(args.device),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "seconds": round(time.time() - start, 1),
    }
    line = ", ".join(f"{k} {v:.3f}" for k, v in result["measured"]["auroc"].items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.entry is not None:
        try:
            entries = json.loads(args.out.read_text()) if args.out.is_file() else {}
        except json.JSONDecodeError as err:
            print(f"eval_out_of_domain: error: {args.out}:{err.lineno}: not valid JSON", file=sys.stderr)
            return 1
        if not isinstance(entries, dict) or "measured" in entries:
            print(f"eval_out_of_domain: error: {args.out} is not a file of entries", file=sys.stderr)
            return 1
        result = {**entries, args.entry: result}
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(f"eval_out_of_domain: AUROC {line} -> {args.out}", file=sys.stderr)
    return 2 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
