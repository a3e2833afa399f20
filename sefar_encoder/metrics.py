"""Classification metrics (docs/DESIGN.md §Evaluation and export): top-1/top-5/mean class accuracy, set and
event level, pairs.

Shapes: ``probs [N, K]`` averaged softmax over test views, ``labels [N]``. Mean class accuracy (FineGym's
usual metric) is the mean over classes *present in the labels* of per-class recall. Set and event level
sum the class probabilities inside each group and take the argmax group. Pair accuracy asks, for clips
of either class of a pair (e.g. salto forward vs backward), whether the pair member with the higher
probability is the right one — the direction test that an order-blind model fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0


def mean_class_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    classes = np.unique(labels)
    if len(classes) == 0:
        return 0.0
    return float(np.mean([(pred[labels == c] == c).mean() for c in classes]))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, pred]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def group_accuracy(probs: np.ndarray, labels: np.ndarray, group_of: Sequence[Any]) -> dict[str, float]:
    """Accuracy and mean class accuracy after summing class probabilities within each group."""
    names = sorted({str(g) for g in group_of})
    index = {g: i for i, g in enumerate(names)}
    member = np.array([index[str(g)] for g in group_of])
    grouped = np.zeros((probs.shape[0], len(names)))
    for c in range(probs.shape[1]):
        grouped[:, member[c]] += probs[:, c]
    pred = grouped.argmax(axis=1)
    true = member[labels]
    return {
        "top1": float((pred == true).mean()) if len(true) else 0.0,
        "mean_class": mean_class_accuracy(pred, true),
    }


def pair_accuracy(probs: np.ndarray, labels: np.ndarray, pairs: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Binary accuracy within each class pair, over the clips of the pair's two classes."""
    per_pair = {}
    correct_all, count_all = 0, 0
    for a, b in pairs:
        mask = (labels == a) | (labels == b)
        if not mask.any():
            continue
        chosen = np.where(probs[mask, a] >= probs[mask, b], a, b)
        correct = int((chosen == labels[mask]).sum())
        per_pair[f"{a}-{b}"] = {"accuracy": correct / int(mask.sum()), "count": int(mask.sum())}
        correct_all += correct
        count_all += int(mask.sum())
    return {"accuracy": correct_all / count_all if count_all else None, "count": count_all, "pairs": per_pair}


def classification_report(
    probs: np.ndarray,
    labels: np.ndarray,
    set_of: Sequence[Any] | None = None,
    event_of: Sequence[Any] | None = None,
    pairs: dict[str, Sequence[Sequence[int]]] | None = None,
) -> dict[str, Any]:
    """All metrics of one evaluation as plain JSON-able numbers (accuracies as fractions in [0, 1])."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "count": len(labels),
        "top1": topk_accuracy(probs, labels, 1),
        "top5": topk_accuracy(probs, labels, 5),
        "mean_class": mean_class_accuracy(pred, labels),
    }
    if set_of is not None:
        out["set"] = group_accuracy(probs, labels, set_of)
    if event_of is not None:
        out["event"] = group_accuracy(probs, labels, event_of)
    for name, pair_list in (pairs or {}).items():
        out[f"pairs_{name}"] = pair_accuracy(probs, labels, pair_list)
    return out
