"""Routines for the detector: window features, clip time spans and routine-level (weak) labels, batched.

A :class:`RoutineSet` joins a routines file (``gym_qa.routine_annotations``: subsets, segments, classes)
with a feature folder (:mod:`sefar_encoder.detection.features`). Training sees only what a weakly
supervised detector may see: per routine the multi-hot element classes and sets (coarse classes); the
segments stay for the evaluation.

Shape notation: B routines, T windows (padded to the longest in the batch), D feature width, C classes,
G coarse classes (the sets of the classes, in sorted set-id order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gym_qa.detection_eval import Detection
from gym_qa.routine_annotations import Routine, ground_truth_detections, read_routines_json
from sefar_encoder.detection.features import read_feature_folder
from sefar_encoder.detection.inference import clip_spans


@dataclass
class RoutineSet:
    """The routines of one subset with their features; classes and sets are the routines file's."""

    routines: list[Routine]
    features: list[torch.Tensor]  # per routine [T, D] float32
    spans: list[np.ndarray]  # per routine [T, 2] seconds each window stands for
    labels: torch.Tensor  # [N, C] multi-hot elements
    coarse_labels: torch.Tensor  # [N, G] multi-hot sets
    class_names: dict[int, tuple[str, int, str]]  # label -> (name, set id, event)
    set_ids: list[int]  # coarse class g is set set_ids[g]
    feature_meta: dict

    def __len__(self) -> int:
        return len(self.routines)

    @property
    def coarse_of_class(self) -> list[int]:
        return [self.set_ids.index(self.class_names[c][1]) for c in range(len(self.class_names))]

    def ground_truth(self) -> list[Detection]:
        return ground_truth_detections(self.routines)


def load_routine_set(routines_file: str | Path, feature_folder: str | Path, subset: str) -> RoutineSet:
    """The routines of ``subset`` (``training``, ``validation``, ``testing``) with their features."""
    routines, classes = read_routines_json(routines_file)
    chosen = [r for r in routines if r.subset == subset]
    if sorted(classes) != list(range(len(classes))):
        raise ValueError(f"{routines_file}: class labels must be 0..C-1")
    feats, meta = read_feature_folder(feature_folder, [r.routine_id for r in chosen])
    set_ids = sorted({s for _, s, _ in classes.values()})
    labels = torch.zeros(len(chosen), len(classes))
    coarse = torch.zeros(len(chosen), len(set_ids))
    spans = []
    for i, r in enumerate(chosen):
        labels[i, r.labels()] = 1.0
        coarse[i, [set_ids.index(s) for s in r.sets()]] = 1.0
        f = feats[r.routine_id]
        spans.append(clip_spans(f.starts, meta["window"], meta["stride"], f.fps, f.num_frames))
    return RoutineSet(
        routines=chosen,
        features=[torch.from_numpy(feats[r.routine_id].features) for r in chosen],
        spans=spans,
        labels=labels,
        coarse_labels=coarse,
        class_names=classes,
        set_ids=set_ids,
        feature_meta=meta,
    )


@dataclass
class RoutineBatch:
    indices: list[int]  # into the RoutineSet
    features: torch.Tensor  # [B, T, D] zero-padded
    mask: torch.Tensor  # [B, T] True for real windows
    labels: torch.Tensor  # [B, C]
    coarse_labels: torch.Tensor  # [B, G]
    clusters: torch.Tensor | None  # [B, T] cluster ids (0 on padding), when clustering


def collate(data: RoutineSet, indices: list[int], clusters: list[torch.Tensor] | None = None) -> RoutineBatch:
    """Pad the routines ``indices`` of ``data`` into one batch (``clusters``: per routine ``[T]`` ids)."""
    lengths = [data.features[i].shape[0] for i in indices]
    t = max(lengths)
    features = torch.zeros(len(indices), t, data.features[indices[0]].shape[1])
    mask = torch.zeros(len(indices), t, dtype=torch.bool)
    ids = torch.zeros(len(indices), t, dtype=torch.long) if clusters is not None else None
    for row, (i, n) in enumerate(zip(indices, lengths)):
        features[row, :n] = data.features[i]
        mask[row, :n] = True
        if ids is not None:
            ids[row, :n] = clusters[i]
    return RoutineBatch(indices, features, mask, data.labels[indices], data.coarse_labels[indices], ids)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation that is a function of (seed, epoch) only, so a resumed run
    sees the same batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
