"""Evaluate an encoder on an eval list (docs/DESIGN.md §Evaluation and export): multi-view testing, student
and teacher, the metrics of :mod:`sefar_encoder.metrics` and the confusion matrix. Used by
``scripts/train_encoder.py`` (validation every epoch, test once at the end) and ``scripts/eval_encoder.py``
(an exported encoder on any list).

    dataset (mode="eval": n_test = temporal offsets × spatial crops per clip)
        ──► evaluate(model, dataset) ──► Predictions(probs [N, K], labels [N], skipped, fallbacks)
        ──► score(pred, hierarchy, pairs) ──► {top1, top5, mean_class, set, event, pairs_direction, ...}

Multi-view testing averages the softmax over the n_test views of a clip. With several processes each
evaluates every ``world``-th clip and the predictions are gathered (in list order) on every process.
Clips skipped under ``on_bad_sample="skip"`` are left out of the metrics and named in ``skipped``.

Shape notation: B clips, n_test test views per clip, C = 3, S = sum(views) frames, K classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from gym_qa.hierarchy import Hierarchy
from sefar_encoder.dataset import BadSamplePolicy, VideoClipDataset
from sefar_encoder.decoding import Backend
from sefar_encoder.loader import eval_loader
from sefar_encoder.metrics import classification_report, confusion_matrix
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.report import most_confused_pairs
from sefar_encoder.transforms import AugmentConfig


class NoClipsError(RuntimeError):
    """Not one clip of an eval list could be decoded (all skipped under ``on_bad_sample="skip"``)."""


@dataclass
class Predictions:
    """Averaged class probabilities of the clips evaluated, in dataset order."""

    probs: np.ndarray  # [N, K]
    labels: np.ndarray  # [N]
    indices: np.ndarray  # [N] positions in the dataset
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason (on_bad_sample="skip")
    fallbacks: dict[str, str] = field(default_factory=dict)  # path -> decord's reason (read with PyAV)


@torch.no_grad()
def evaluate(
    model: SeFAREncoder,
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
    desc: str = "eval",
) -> Predictions:
    """Multi-view test of ``model`` over an eval-mode dataset (softmax averaged over each clip's views).

    ``shard=(rank, world)``: this process evaluates clips ``rank, rank + world, ...``; the results of every
    process are gathered (a collective: every process must call this). Draws nothing from torch's global
    RNG, so evaluating during training leaves the training's random stream untouched.
    """
    model.eval()
    rank, world = shard
    part = Subset(dataset, list(range(rank, len(dataset), world)))
    rows, skipped, fallbacks = [], {}, {}
    for batch in tqdm(
        eval_loader(part, batch_size, num_workers), desc=desc, disable=not progress, leave=False
    ):
        skipped.update(zip(batch["skipped"], batch["skipped_reasons"]))
        fallbacks.update(batch["fallbacks"])
        if len(batch["index"]) == 0:
            continue
        video = batch["video"].to(device)  # [B, n_test, C, S, H, W]
        b, n = video.shape[:2]
        probs = model(video.flatten(0, 1)).logits.float().softmax(-1).view(b, n, -1).mean(1)  # [B, K]
        rows += list(zip(batch["index"].tolist(), batch["label"].tolist(), probs.cpu().numpy()))
    rows = sorted(gather_object(rows), key=lambda r: r[0])
    for part_skipped, part_fallbacks in gather_object([(skipped, fallbacks)]):
        skipped.update(part_skipped)
        fallbacks.update(part_fallbacks)
    if not rows:
        raise NoClipsError(f"{desc}: no clip could be evaluated ({len(skipped)} skipped as undecodable)")
    return Predictions(
        probs=np.stack([r[2] for r in rows]),
        labels=np.array([r[1] for r in rows], dtype=np.int64),
        indices=np.array([r[0] for r in rows], dtype=np.int64),
        skipped=skipped,
        fallbacks=fallbacks,
    )


def score(
    pred: Predictions, hierarchy: Hierarchy | None, pairs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Top-1/top-5/mean class accuracy; set and event level with a hierarchy; pair accuracy per pair
    kind (e.g. ``pairs_direction``: forward vs backward salto) when ``pairs`` are given."""
    labels = range(pred.probs.shape[1])
    return classification_report(
        pred.probs,
        pred.labels,
        [hierarchy.set_of(c) for c in labels] if hierarchy is not None else None,
        [hierarchy.event_of(c) for c in labels] if hierarchy is not None else None,
        pairs or {},
    )


def confusion(pred: Predictions) -> np.ndarray:
    """``cm[true, predicted]`` counts of the top-1 predictions."""
    return confusion_matrix(pred.probs.argmax(1), pred.labels, pred.probs.shape[1])


def full_report(
    pred: Predictions, hierarchy: Hierarchy | None, names: list[str], pairs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`score` plus the most confused class pairs and the decoding problems; and the confusion matrix."""
    cm = confusion(pred)
    report = score(pred, hierarchy, pairs)
    report["most_confused"] = most_confused_pairs(cm, names)
    report["skipped"] = {"count": len(pred.skipped), "clips": _records(pred.skipped)}
    report["decoder_fallbacks"] = {"count": len(pred.fallbacks), "clips": _records(pred.fallbacks)}
    return report, cm


def _records(by_path: dict[str, str]) -> list[dict[str, str]]:
    return [{"path": p, "reason": r} for p, r in sorted(by_path.items())]


def evaluate_candidates(
    candidates: dict[str, SeFAREncoder],
    dataset: Dataset,
    hierarchy: Hierarchy,
    pairs: dict[str, Any],
    batch_size: int,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
    desc: str = "val",
) -> dict[str, dict[str, Any]]:
    """:func:`score` of each named model (e.g. ``{"student": ..., "teacher": ...}``) on ``dataset``."""
    return {
        who: score(
            evaluate(model, dataset, batch_size, num_workers, device, shard, progress, f"{desc} {who}"),
            hierarchy,
            pairs,
        )
        for who, model in candidates.items()
    }


def read_pairs(data_root: str | Path | None) -> dict[str, Any]:
    """Class pairs for pair accuracy from a SynthGym data set's ``meta.json`` (``{}`` without one)."""
    if data_root is None:
        return {}
    path = Path(data_root) / "meta.json"
    return json.loads(path.read_text()).get("pairs", {}) if path.is_file() else {}


def encoder_hierarchy(encoder: SeFAREncoder) -> Hierarchy | None:
    """The hierarchy saved with an exported encoder (``hierarchy.json``), if any."""
    if encoder.hierarchy is None:
        return None
    return Hierarchy.from_json(encoder.hierarchy, source="checkpoint hierarchy.json")


def class_names(encoder: SeFAREncoder, hierarchy: Hierarchy | None) -> list[str]:
    if encoder.class_names is not None:
        return list(encoder.class_names)
    if hierarchy is not None:
        return hierarchy.names
    return [str(i) for i in range(encoder.config.num_classes)]


def evaluate_list(
    encoder: SeFAREncoder,
    list_path: str | Path,
    *,
    num_clips: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    num_workers: int = 0,
    backend: Backend = "decord",
    on_bad_sample: BadSamplePolicy = "error",
    pairs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """An exported encoder on a list file: ``(report, confusion matrix)`` (``scripts/eval_encoder.py``).

    Multi-view testing with ``num_clips`` temporal offsets x ``crops`` spatial crops (1 or 3) per clip,
    through the preprocessing the export records (views, crop size, normalisation). Every clip
    is checked first: with ``on_bad_sample="error"`` a :class:`~sefar_encoder.clip_checks.BadClipsError` lists
    all bad clips before anything is evaluated; with ``"skip"`` they are left out and listed in the report.
    Raises :class:`gym_qa.lists.ListFileError` for a malformed list or a label outside the encoder's classes.
    """
    pre = encoder.preprocessing
    augment = AugmentConfig(mean=pre.mean, std=pre.std, test_offsets=num_clips, test_crops=crops)
    dataset = VideoClipDataset(
        list_path,
        encoder.config.num_classes,
        "eval",
        views=pre.views,
        image_size=pre.image_size,
        augment=augment,
        backend=backend,
        on_bad_sample=on_bad_sample,
    )
    dataset.validate(num_workers=num_workers, progress=progress)
    pred = evaluate(encoder.to(device), dataset, batch_size, num_workers, device, progress=progress)
    pred.skipped.update({str(dataset.entries[i].path): r for i, r in dataset.known_bad.items()})
    pred.fallbacks.update(dataset.fallbacks)
    hierarchy = encoder_hierarchy(encoder)
    report, cm = full_report(pred, hierarchy, class_names(encoder, hierarchy), pairs)
    report["multi_view"] = {"num_clips": num_clips, "crops": crops, "views_per_clip": num_clips * crops}
    return report, cm
