"""From clip logits to element segments, as HAAN detects (its evaluation code's rule, written anew).

For one routine with clip logits ``[T, C]``:

1. routine class score s_c = the mean of the top ⌈T/2⌉ clip logits of class c;
2. only classes with s_c > ``min_class_score`` (0: a routine-level probability above 1/2) are searched;
3. per searched class, threshold θ_c = mean_t + α (max_t − min_t) of its clip logits (α = 0.1); every run
   of consecutive clips above θ_c is a segment;
4. a segment's score is its highest clip logit + 0.5 s_c.

Clip i stands for the seconds ``clip_spans[i]`` (:func:`clip_spans`: a window's stride-long share of the
routine around its centre), so a run of clips ``[i, j)`` is the segment from the start of clip i's span to
the end of clip j − 1's.

Shape notation: T clips, C classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gym_qa.detection_eval import Detection


@dataclass
class InferenceConfig:
    """The detection rule's knobs (``inference.*`` in the trainer's config)."""

    alpha: float = field(
        default=0.1, metadata={"help": "class threshold = mean + alpha (max - min) of its clip logits"}
    )
    top_divisor: int = field(
        default=2, metadata={"help": "routine class score = mean of the top ceil(T / this) clip logits"}
    )
    min_class_score: float = field(
        default=0.0, metadata={"help": "classes whose routine score (a logit) is at most this are skipped"}
    )
    class_score_weight: float = field(
        default=0.5, metadata={"help": "segment score = max clip logit + this x routine class score"}
    )


def clip_spans(starts: np.ndarray, window: int, stride: int, fps: float, num_frames: int) -> np.ndarray:
    """Seconds ``[T, 2]`` each clip stands for: the ``stride`` frames around the centre of its window
    ``[start, start + window)``, clipped to the routine (``num_frames`` frames at ``fps``); the first clip
    reaches back to the routine's start and the last to its end, which no other clip covers."""
    centres = np.asarray(starts, dtype=np.float64) + window / 2.0
    spans = np.stack([centres - stride / 2.0, centres + stride / 2.0], axis=1)
    spans[0, 0], spans[-1, 1] = 0.0, float(num_frames)
    return np.clip(spans, 0.0, float(num_frames)) / fps


def routine_class_scores(logits: np.ndarray, top_divisor: int = 2) -> np.ndarray:
    """``[T, C]`` -> ``[C]``: the mean of the top ⌈T / top_divisor⌉ clip logits of each class."""
    k = max(1, math.ceil(logits.shape[0] / top_divisor))
    return -np.mean(np.sort(-logits, axis=0)[:k], axis=0)


def runs_above(values: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of consecutive indices with ``values > threshold``."""
    above = np.concatenate([[False], values > threshold, [False]]).astype(np.int8)
    edges = np.diff(above)
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def detect(routine_id: str, logits: np.ndarray, spans: np.ndarray, cfg: InferenceConfig) -> list[Detection]:
    """The segments of one routine from its clip logits ``[T, C]`` and clip spans ``[T, 2]`` (seconds)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != spans.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"{routine_id}: logits {logits.shape} do not match {spans.shape[0]} clip spans")
    scores = routine_class_scores(logits, cfg.top_divisor)
    found = []
    for c in np.flatnonzero(scores > cfg.min_class_score).tolist():
        column = logits[:, c]
        threshold = column.mean() + cfg.alpha * (column.max() - column.min())
        for start, end in runs_above(column, threshold):
            score = float(column[start:end].max() + cfg.class_score_weight * scores[c])
            found.append(Detection(routine_id, float(spans[start, 0]), float(spans[end - 1, 1]), c, score))
    return found
