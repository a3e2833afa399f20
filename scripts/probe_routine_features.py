"""What a routine feature folder allows a detector to reach: the detection rule's ceiling and a fully
supervised probe, the reference points of the weakly supervised detectors (docs/detection.md).

    python scripts/probe_routine_features.py --routines data/synthgym-routines/routines.json \\
        --features data/synthgym-routines/features-sefar [--json-out probe.json]

Every window is labelled with the element at its centre, or background (labels HAAN never sees). Reported,
on the test subset (mAP %, at tIoU 0.1 / 0.3 / 0.5 and averaged over 0.1:0.05:0.5):
  layout      windows per routine, windows per element (median, min), share of windows inside elements
  oracle      the detection rule (sefar_encoder.detection.inference) on perfect clip logits (+5 inside
              an element of the class, -5 elsewhere): what the window grid and the rule allow at all
  probe       a linear classifier over C elements + background, trained on the training routines' window
              labels (full supervision), its element logits through the same rule: what the features
              allow a detector that knew where the elements are; window accuracy overall and on element
              windows
Both are read through the rule without its class filter (``min_class_score`` off): the filter's 0 is a
threshold on a trained MIL detector's routine scores, not on these logits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from gym_qa.detection_eval import evaluate_detection
from gym_qa.routine_annotations import RoutineFileError
from sefar_encoder.detection.features import FeatureFolderError
from sefar_encoder.detection.inference import InferenceConfig, detect
from sefar_encoder.detection.routine_data import RoutineSet, load_routine_set
from sefar_encoder.runtime.atomic import write_json_atomic

NO_FILTER = InferenceConfig(min_class_score=-float("inf"))


def window_labels(data: RoutineSet) -> list[np.ndarray]:
    """Per routine ``[T]``: the element label at each window's centre, ``C`` (background) between."""
    background = len(data.class_names)
    labels = []
    for routine, spans in zip(data.routines, data.spans):
        centres = spans.mean(axis=1)
        y = np.full(len(centres), background)
        for segment in routine.segments:
            y[(centres >= segment.start) & (centres < segment.end)] = segment.label
        labels.append(y)
    return labels


def element_runs(labels: list[np.ndarray], background: int) -> list[int]:
    """Lengths (windows) of the maximal runs of one element."""
    lengths = []
    for y in labels:
        for run in np.split(y, np.flatnonzero(np.diff(y)) + 1):
            if run[0] != background:
                lengths.append(len(run))
    return lengths


def rule_map(data: RoutineSet, logits: list[np.ndarray]) -> dict[str, float]:
    """Test mAP (%) of the detection rule (no class filter) on per-routine clip logits ``[T, C]``."""
    found = []
    for routine, routine_logits, spans in zip(data.routines, logits, data.spans):
        found += detect(routine.routine_id, routine_logits, spans, NO_FILTER)
    report = evaluate_detection(data.ground_truth(), found)
    at = dict(zip(report.thresholds, report.map_per_threshold))
    return {"map@0.1": 100 * at[0.1], "map@0.3": 100 * at[0.3], "map@0.5": 100 * at[0.5]} | {
        "map_avg": 100 * report.average_map
    }


def oracle_logits(labels: list[np.ndarray], num_classes: int) -> list[np.ndarray]:
    out = []
    for y in labels:
        logits = np.full((len(y), num_classes), -5.0)
        inside = np.flatnonzero(y < num_classes)
        logits[inside, y[inside]] = 5.0
        out.append(logits)
    return out


def train_probe(
    features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, seed: int
) -> torch.nn.Module:
    """A linear classifier over standardised features (full-batch Adam)."""
    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    linear = torch.nn.Linear(features.shape[1], classes)
    probe = torch.nn.Sequential(_Standardise(mean, std), linear)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(features), labels).backward()
        optimizer.step()
    return probe.eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def probe_features(routines: Path, features: Path, steps: int = 600, seed: int = 0) -> dict:
    train = load_routine_set(routines, features, "training")
    test = load_routine_set(routines, features, "testing")
    if not len(train) or not len(test):
        raise FeatureFolderError(f"{routines}: the probe needs training and testing routines")
    num_classes = len(train.class_names)
    train_labels, test_labels = window_labels(train), window_labels(test)
    lengths = element_runs(train_labels, num_classes)
    probe = train_probe(
        torch.cat(train.features),
        torch.from_numpy(np.concatenate(train_labels)),
        num_classes + 1,
        steps,
        seed,
    )
    with torch.no_grad():
        test_logits = [probe(f) for f in test.features]
    predicted = torch.cat(test_logits).argmax(1).numpy()
    truth = np.concatenate(test_labels)
    inside = truth < num_classes
    return {
        "routines": str(routines),
        "features": str(features),
        "layout": {
            "windows_per_routine": float(np.mean([len(y) for y in train_labels])),
            "windows_per_element_median": float(np.median(lengths)),
            "windows_per_element_min": int(min(lengths)),
            "element_window_share": float(np.mean(np.concatenate(train_labels) < num_classes)),
        },
        "oracle": rule_map(test, oracle_logits(test_labels, num_classes)),
        "probe": rule_map(test, [logits[:, :num_classes].numpy() for logits in test_logits])
        | {
            "window_accuracy": 100 * float(np.mean(predicted == truth)),
            "element_window_accuracy": 100 * float(np.mean(predicted[inside] == truth[inside])),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routines", type=Path, required=True, help="routines JSON")
    p.add_argument("--features", type=Path, required=True, help="feature folder of those routines")
    p.add_argument("--steps", type=int, default=600, help="probe training steps (full batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    try:
        result = probe_features(args.routines, args.features, args.steps, args.seed)
    except (FeatureFolderError, RoutineFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json_out:
        write_json_atomic(args.json_out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
