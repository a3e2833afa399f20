"""Temporal action detection evaluation: mean average precision at temporal-IoU thresholds (NumPy only).

The definition is ActivityNet's detection metric, written from its description (not copied):

1. tIoU of two segments ``[s1, e1]``, ``[s2, e2]`` = overlap / union, with union = (e1 - s1) + (e2 - s2) -
   overlap; a zero union (two empty segments at one point) counts as tIoU 0.
2. Per class and per threshold θ: the class's predictions, over all videos, sorted by score (highest
   first; ties keep input order, a stable sort). Each prediction is matched to the ground-truth segment of
   the same class *in the same video* with the highest tIoU that is not yet matched at this threshold;
   it is a true positive when that tIoU ≥ θ. A prediction whose best remaining ground truth is below θ, or
   whose ground truths are all matched already (a duplicate), is a false positive.
3. AP = area under the precision–recall curve after all-point interpolation (precision made monotone
   non-increasing from the right, summed over the recall steps), recall relative to the class's number of
   ground-truth segments.
4. mAP(θ) = the mean AP over the classes that have at least one ground-truth segment; classes without any
   are left out (their predictions are counted as ignored, never as false positives of another class) and
   reported. The summary figure is the mean of mAP(θ) over θ = 0.10, 0.15, …, 0.50, HAAN's and
   FineGym-detection's thresholds.

The one subtlety of step 2 kept from ActivityNet: candidate ground truths are visited in order of tIoU,
and the search stops at the first one below θ; a matched ground truth above θ is skipped, so a duplicate
can still take the next-best unmatched ground truth when that one is above θ too.

Shape notation: P predictions, G ground-truth segments, K thresholds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(9))  # 0.10 … 0.50


@dataclass(frozen=True)
class Detection:
    """One temporal segment of one video: a ground-truth element (score unused) or a prediction."""

    video: str
    start: float  # seconds
    end: float  # seconds
    label: int
    score: float = 1.0


@dataclass
class DetectionReport:
    """What :func:`evaluate_detection` measured; every number is a fraction in [0, 1]."""

    thresholds: tuple[float, ...]
    map_per_threshold: list[float]  # [K]
    average_map: float  # mean over thresholds
    ap_per_class: dict[int, list[float]]  # label -> [K], classes with ground truth only
    num_ground_truth: dict[int, int]  # label -> ground-truth segments
    classes_without_ground_truth: list[int] = field(default_factory=list)  # had predictions, no GT
    predictions_ignored: int = 0  # predictions of classes without ground truth

    def to_json(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "map_per_threshold": self.map_per_threshold,
            "average_map": self.average_map,
            "classes_evaluated": len(self.ap_per_class),
            "classes_without_ground_truth": self.classes_without_ground_truth,
            "predictions_ignored": self.predictions_ignored,
            "ap_per_class": {str(k): v for k, v in sorted(self.ap_per_class.items())},
            "num_ground_truth": {str(k): v for k, v in sorted(self.num_ground_truth.items())},
        }


def temporal_iou(segment: Sequence[float], segments: np.ndarray) -> np.ndarray:
    """tIoU of one ``[start, end]`` against ``segments`` ``[G, 2]`` → ``[G]``; zero union → 0."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    start, end = float(segment[0]), float(segment[1])
    overlap = np.clip(np.minimum(end, segments[:, 1]) - np.maximum(start, segments[:, 0]), 0.0, None)
    union = (end - start) + (segments[:, 1] - segments[:, 0]) - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP from the precision and recall after each ranked prediction.

    ``recall`` must be non-decreasing (it is, along a ranking). Precision is padded with 0 at both ends,
    recall with 0 and 1, precision replaced by its running maximum from the right, and AP is the sum of
    precision × recall increase over the points where recall changes.
    """
    precision = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    recall = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def match_predictions(
    ground_truth: Sequence[Detection], predictions: Sequence[Detection], thresholds: Sequence[float]
) -> np.ndarray:
    """True-positive flags ``[K, P]`` of ONE class's predictions in ranked order (by score, stable).

    See the module docstring, step 2, for the matching rule.
    """
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i].score)
    gt_by_video: dict[str, list[int]] = defaultdict(list)
    for g, det in enumerate(ground_truth):
        gt_by_video[det.video].append(g)
    gt_segments = np.array([[d.start, d.end] for d in ground_truth], dtype=np.float64).reshape(-1, 2)
    true_positive = np.zeros((len(thresholds), len(predictions)), dtype=bool)
    matched = np.zeros((len(thresholds), len(ground_truth)), dtype=bool)
    for rank, p in enumerate(order):
        pred = predictions[p]
        candidates = np.array(gt_by_video.get(pred.video, []), dtype=np.int64)
        if candidates.size == 0:
            continue
        ious = temporal_iou((pred.start, pred.end), gt_segments[candidates])
        by_iou = np.argsort(-ious, kind="stable")
        for k, threshold in enumerate(thresholds):
            for c in by_iou:
                if ious[c] < threshold:
                    break
                g = candidates[c]
                if matched[k, g]:
                    continue
                matched[k, g] = True
                true_positive[k, rank] = True
                break
    return true_positive


def class_average_precision(
    ground_truth: Sequence[Detection], predictions: Sequence[Detection], thresholds: Sequence[float]
) -> list[float]:
    """AP of one class at each threshold ``[K]``; needs at least one ground-truth segment."""
    if not ground_truth:
        raise ValueError("AP is undefined for a class without ground truth")
    if not predictions:
        return [0.0] * len(thresholds)
    true_positive = match_predictions(ground_truth, predictions, thresholds)  # [K, P]
    tp = np.cumsum(true_positive, axis=1, dtype=np.float64)
    fp = np.cumsum(~true_positive, axis=1, dtype=np.float64)
    recall = tp / len(ground_truth)
    precision = tp / (tp + fp)
    return [interpolated_average_precision(precision[k], recall[k]) for k in range(len(thresholds))]


def evaluate_detection(
    ground_truth: Iterable[Detection],
    predictions: Iterable[Detection],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> DetectionReport:
    """mAP at each tIoU threshold and its mean, over the classes that have ground truth.

    Segments must have ``end >= start`` (a ``ValueError`` names the first that does not); without any
    ground truth mAP is undefined and a ``ValueError`` says so.
    """
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"tIoU thresholds must be in (0, 1], got {thresholds}")
    gt_by_class: dict[int, list[Detection]] = defaultdict(list)
    pred_by_class: dict[int, list[Detection]] = defaultdict(list)
    for what, items, target in (
        ("ground truth", ground_truth, gt_by_class),
        ("prediction", predictions, pred_by_class),
    ):
        for det in items:
            if not det.end >= det.start:
                raise ValueError(f"{what} segment ends before it starts: {det}")
            target[det.label].append(det)
    ap_per_class = {
        label: class_average_precision(gts, pred_by_class.get(label, []), thresholds)
        for label, gts in sorted(gt_by_class.items())
    }
    without_gt = sorted(set(pred_by_class) - set(gt_by_class))
    if not ap_per_class:
        raise ValueError("no ground-truth segments: mAP is undefined")
    map_per_threshold = np.mean(np.array(list(ap_per_class.values())), axis=0).tolist()
    return DetectionReport(
        thresholds=thresholds,
        map_per_threshold=[float(v) for v in map_per_threshold],
        average_map=float(np.mean(map_per_threshold)),
        ap_per_class=ap_per_class,
        num_ground_truth={label: len(gts) for label, gts in sorted(gt_by_class.items())},
        classes_without_ground_truth=without_gt,
        predictions_ignored=sum(len(pred_by_class[label]) for label in without_gt),
    )
