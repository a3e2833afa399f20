"""Predict the elements of video clips with an exported encoder: the library behind ``scripts/predict.py``
and the demo.

    predictor = Predictor("runs/quickstart/encoder")          # a save_pretrained directory
    p = predictor.predict("clip.mp4")                          # ClipPrediction, or DecodeError for a bad file
    p.top_k[0].name, p.top_k[0].probability, p.top_k[0].set_name, p.top_k[0].event_name
    p.frames[v], p.frame_indices[v]                            # the decoded frames of view v, and where from
    for result in predictor.predict_many(read_inputs("clips/")):   # ClipPrediction | PredictionFailure
        ...                                                    # one per input, in input order, never raises

Every clip goes through the data path's eval dataset, ``VideoClipDataset(mode="eval")`` (which also
evaluates the encoder during training and feeds the MLLM's feature cache), with the preprocessing the
export records (``encoder.preprocessing``: views, crop size, mean/std): segment centres, short side
resized to the crop size, one centre crop (multi-view testing with ``test_offsets`` / ``test_crops``)::

    file ──VideoClipDataset.decode──► frames [n_offsets*S, H, W, 3] at indices [n_offsets, S] (ONE decode)
         ──VideoClipDataset.augment_decoded──► video [n_test, C, S, h, w]
         ──encoder──► softmax, averaged over n_test ──► top-k (+ set, event from the hierarchy)

Set and event names come from the checkpoint's ``hierarchy.json`` (absent: only labels and names).

Every prediction carries an :class:`~sefar_encoder.out_of_domain.Uncertainty`: the scores of
:data:`~sefar_encoder.out_of_domain.SCORES` (max-softmax, energy, K-sample head-dropout statistics, and the
view features' distance to the training clips when the export has their Gaussian) and the out-of-domain
flag from the export's ``out_of_domain.json`` (absent: the flag is None, "uncalibrated")::

    p.uncertainty.scores["energy"], p.uncertainty.out_of_domain, predictor.calibration_status

Shape notation: B batch, n_test = temporal offsets × spatial crops, C = 3, S = sum(views) frames,
H/W source pixels, h/w = the encoder's image size, K classes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import EVENT_NAMES
from gym_qa.lists import ListEntry
from sefar_encoder.clip_inputs import ClipInput
from sefar_encoder.dataset import SkippedSample, VideoClipDataset
from sefar_encoder.decoding import Backend, DecodeError
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.out_of_domain import (
    DEFAULT_DROPOUT_SAMPLES,
    DEFAULT_SCORE,
    MASK_SEED,
    SCORES,
    FeatureGaussian,
    OutOfDomainCalibration,
    Uncertainty,
    dropout_masks,
    uncertainty_scores,
)
from sefar_encoder.transforms import AugmentConfig, one_thread


@dataclass(frozen=True)
class ElementScore:
    """One entry of a top-k list: a class with its probability and, with a hierarchy, its set and event."""

    label: int
    name: str
    probability: float
    set_id: int | None = None
    set_name: str | None = None
    event: str | None = None  # event code: VT, FX, BB, UB
    event_name: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "probability": round(self.probability, 6),
            "set": self.set_id,
            "set_name": self.set_name,
            "event": self.event,
            "event_name": self.event_name,
        }


@dataclass
class ClipPrediction:
    """The encoder's top-k elements for one clip.

    ``frame_indices[v]`` are the indices (in the file) of the frames view v saw; ``frames[v]`` are those
    frames as decoded, ``[T_v, H, W, 3]`` uint8 (first temporal offset), and ``video`` the encoder's input
    ``[n_test, C, S, h, w]`` (both ``None`` in batch mode).
    """

    path: str
    top_k: list[ElementScore]
    num_frames: int
    frame_indices: list[list[int]]
    frames: list[np.ndarray] | None = field(default=None, repr=False)
    video: torch.Tensor | None = field(default=None, repr=False)
    label: int | None = None  # the known class of the input, if any
    seconds: float = 0.0  # decode + forward time of this clip (batch mode: its share of the batch)
    uncertainty: Uncertainty | None = None  # scores and out-of-domain flag (see sefar_encoder.out_of_domain)

    @property
    def top1(self) -> ElementScore:
        return self.top_k[0]

    @property
    def correct(self) -> bool | None:
        """Top-1 equals the known label (None without a label)."""
        return None if self.label is None else self.top1.label == self.label

    @property
    def out_of_domain(self) -> bool | None:
        """The calibrated out-of-domain flag (None: uncalibrated)."""
        return None if self.uncertainty is None else self.uncertainty.out_of_domain

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the frames themselves are left out)."""
        record: dict[str, Any] = {
            "path": self.path,
            "ok": True,
            "top_k": [score.to_record() for score in self.top_k],
            "num_frames": self.num_frames,
            "frame_indices": self.frame_indices,
            "out_of_domain": self.out_of_domain,
        }
        if self.uncertainty is not None:
            record["uncertainty"] = self.uncertainty.to_record()
        if self.label is not None:
            record["label"] = self.label
            record["correct"] = self.correct
            record["in_top_k"] = any(score.label == self.label for score in self.top_k)
        return record


@dataclass(frozen=True)
class PredictionFailure:
    """A clip that could not be predicted, with a one-line reason (no traceback)."""

    path: str
    error: str
    label: int | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"path": self.path, "ok": False, "error": self.error}
        if self.label is not None:
            record["label"] = self.label
        return record


# ---- the predictor ------------------------------------------------------------------------------------


@dataclass
class LoadedClip:
    """One clip through the eval dataset: ``video [n_test, C, S, h, w]``, ``frame_indices [n_offsets, S]``
    and the decoded ``frames [S, H, W, 3]`` of the first offset (None unless asked for)."""

    video: torch.Tensor
    frame_indices: np.ndarray
    num_frames: int
    frames: np.ndarray | None = None


def load_clip(dataset: VideoClipDataset, index: int, keep_frames: bool = False) -> LoadedClip:
    """Sample ``index`` of an eval dataset, with what a prediction reports besides the tensor: the clip's
    frame count and (``keep_frames``) its decoded frames. Raises :class:`DecodeError` for a bad file."""
    decoded = dataset.decode(index)  # the one decode of this clip
    video = dataset.augment_decoded(decoded)["video"]  # [n_test, C, S, h, w]
    first = decoded.frames[: decoded.frame_indices.shape[1]].copy() if keep_frames else None
    return LoadedClip(video, decoded.frame_indices, decoded.num_frames, first)


class _NeverRaising(Dataset):
    """An eval dataset whose items never raise: a failure becomes a SkippedSample with a one-line reason
    (decoders can fail in ways other than DecodeError; one bad file must not end a batch run, in the main
    process or in a DataLoader worker)."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, LoadedClip] | SkippedSample:
        path = self.dataset.entries[index].path
        try:
            with one_thread():  # see transforms.one_thread: small per-sample tensors
                return index, load_clip(self.dataset, index)
        except DecodeError as err:
            return SkippedSample(index, str(path), err.without_path())
        except Exception as err:  # noqa: BLE001 - reported per clip, see the class docstring
            return SkippedSample(index, str(path), f"cannot decode video ({type(err).__name__}: {err})")


def _collate(batch: list[tuple[int, LoadedClip] | SkippedSample]) -> dict[str, Any]:
    kept = [b for b in batch if not isinstance(b, SkippedSample)]
    return {
        "video": torch.stack([clip.video for _, clip in kept]) if kept else None,  # [B, n_test, C, S, h, w]
        "clips": kept,
        "failed": {b.index: b.reason for b in batch if isinstance(b, SkippedSample)},
    }


class Predictor:
    """An encoder checkpoint + its eval preprocessing + its hierarchy, answering top-k questions.

    ``encoder``: a ``save_pretrained`` directory or a loaded :class:`SeFAREncoder` (its
    ``preprocessing`` gives crop size, views and normalisation). ``test_offsets`` and ``test_crops``
    enable multi-view testing (softmax averaged). Safe to call from several threads (inference only, no
    shared mutable state).

    Out-of-domain flag: ``calibration`` (default: the ``out_of_domain.json`` of the encoder directory, if
    any) gives the thresholds; it applies only if made with the same test views and ``dropout_samples``
    (:attr:`calibration_status` says whether and why not). ``ood_score`` picks the score the flag uses
    (default: the calibration's). ``features``: the Gaussian of the ``feature_distance`` score (default:
    the encoder directory's ``out_of_domain_features.safetensors``, if any; :meth:`fit_features` fits one).
    """

    def __init__(
        self,
        encoder: SeFAREncoder | str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        top_k: int = 5,
        backend: Backend = "decord",
        test_offsets: int = 1,
        test_crops: Literal[1, 3] = 1,
        calibration: OutOfDomainCalibration | None = None,
        ood_score: str | None = None,
        dropout_samples: int = DEFAULT_DROPOUT_SAMPLES,
        features: FeatureGaussian | None = None,
    ):
        if not isinstance(encoder, SeFAREncoder):
            calibration = calibration or OutOfDomainCalibration.load(encoder)
            features = features or FeatureGaussian.load(encoder)
            encoder = SeFAREncoder.from_pretrained(encoder, map_location=device)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if ood_score is not None and ood_score not in SCORES:
            raise ValueError(f"unknown out-of-domain score {ood_score!r}; choose one of {sorted(SCORES)}")
        self.model = encoder.to(device).eval()
        self.device = torch.device(device)
        self.config = encoder.config
        self.top_k = min(top_k, self.config.num_classes)
        self.backend = backend
        pre = encoder.preprocessing
        self.augment = AugmentConfig(
            mean=pre.mean, std=pre.std, test_offsets=test_offsets, test_crops=test_crops
        )
        self.hierarchy = (
            Hierarchy.from_json(encoder.hierarchy, source="checkpoint hierarchy.json")
            if encoder.hierarchy is not None
            else None
        )
        if self.hierarchy is not None and self.hierarchy.num_classes != self.config.num_classes:
            raise ValueError(
                f"the checkpoint's hierarchy has {self.hierarchy.num_classes} classes, "
                f"the encoder {self.config.num_classes}"
            )
        if encoder.class_names is not None:
            self.class_names = list(encoder.class_names)
        elif self.hierarchy is not None:
            self.class_names = self.hierarchy.names
        else:
            self.class_names = [str(i) for i in range(self.config.num_classes)]
        self.dropout_samples = dropout_samples
        self._masks = dropout_masks(
            self.config.resolved_fusion_dim, self.config.head_dropout, dropout_samples, MASK_SEED
        ).to(self.device)  # [K, Dh], fixed: a clip's scores do not depend on its batch
        self.features = features
        if ood_score == "feature_distance" and features is None:
            raise ValueError(
                "the feature_distance score needs the encoder's out_of_domain_features.safetensors"
            )
        self.ood_score = ood_score or (calibration.score if calibration is not None else DEFAULT_SCORE)
        self.calibration: OutOfDomainCalibration | None = None
        if calibration is None:
            self.calibration_status = "uncalibrated: the encoder has no out_of_domain.json"
        elif (reason := calibration.mismatch(test_offsets, test_crops, dropout_samples)) is not None:
            self.calibration_status = f"uncalibrated: {reason}"
        elif self.ood_score == "feature_distance" and features is None:
            self.ood_score = DEFAULT_SCORE  # shown, not flagged: the status says why
            self.calibration_status = (
                "uncalibrated: the calibration flags on feature_distance, whose Gaussian "
                "(out_of_domain_features.safetensors) is missing"
            )
        else:
            self.calibration = calibration.with_score(self.ood_score)
            self.calibration_status = (
                f"calibrated on {calibration.num_clips} in-domain clips ({calibration.inputs}): "
                f"{self.ood_score} above {self.calibration.threshold:.4g} is flagged, which keeps "
                f"{calibration.keep:.0%} of them in domain"
            )

    @property
    def views(self) -> tuple[int, ...]:
        return self.config.views

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def element(self, label: int, probability: float = 0.0) -> ElementScore:
        """Class ``label`` as an :class:`ElementScore` (set and event from the hierarchy, if any)."""
        if self.hierarchy is None:
            return ElementScore(label, self.class_names[label], probability)
        e = self.hierarchy.element(label)
        return ElementScore(
            label=label,
            name=self.class_names[label],
            probability=probability,
            set_id=e.set_id,
            set_name=self.hierarchy.set_display_name(e.set_id),
            event=e.event,
            event_name=EVENT_NAMES.get(e.event, e.event),
        )

    def eval_dataset(self, paths: Sequence[str | os.PathLike]) -> VideoClipDataset:
        """The clips through the data path's eval pipeline with this encoder's preprocessing; bad files
        raise :class:`DecodeError` when their sample is read."""
        # The dataset's labels are placeholders: a known label travels with the ClipInput instead.
        entries = [ListEntry(Path(p), 0, line, str(p)) for line, p in enumerate(paths, start=1)]
        return VideoClipDataset(
            entries,
            None,
            "eval",
            views=self.config.views,
            image_size=self.config.img_size,
            augment=self.augment,
            backend=self.backend,
        )

    def load(self, path: str | os.PathLike, keep_frames: bool = False) -> LoadedClip:
        """Decode (once) and preprocess one clip; raises :class:`DecodeError` for a bad file."""
        return load_clip(self.eval_dataset([path]), 0, keep_frames)

    @torch.inference_mode()
    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``video [B, n_test, C, S, h, w]`` -> class probabilities ``[B, K]`` (softmax averaged over n_test)
        and the uncertainty scores of :data:`~sefar_encoder.out_of_domain.SCORES`, ``[B]`` each."""
        b, n_test = video.shape[:2]
        out = self.model(video.flatten(0, 1).to(self.device))
        logits = out.logits.float().view(b, n_test, -1)  # [B, n_test, K]
        # the K dropout samples of the head: classifier(h * mask_k), [Ks, B, n_test, K]
        samples = self.model.fusion_head.classifier(out.h[None] * self._masks[:, None].to(out.h.dtype))
        scores = uncertainty_scores(
            logits,
            samples.float().view(-1, b, n_test, logits.shape[-1]),
            view_features=out.view_features.flatten(1).view(b, n_test, -1),  # [B, n_test, V*D]
            gaussian=self.features,
        )
        return logits.softmax(dim=-1).mean(dim=1).cpu(), {k: v.cpu() for k, v in scores.items()}

    def _loader(self, clips: Sequence[ClipInput], batch_size: int, num_workers: int) -> DataLoader:
        """The clips in input order through the eval data path; an unreadable clip is a ``failed`` entry
        of its batch, never an exception."""
        dataset = _NeverRaising(self.eval_dataset([c.path for c in clips]))
        return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)

    @torch.inference_mode()
    def fit_features(
        self, clips: Sequence[ClipInput | str | os.PathLike], batch_size: int = 8, num_workers: int = 0
    ) -> tuple[FeatureGaussian, list[PredictionFailure]]:
        """Fit the ``feature_distance`` Gaussian on the view features of in-domain ``clips`` (labels unused)
        and use it from now on; returns it and the clips that could not be read (left out). A set-up step
        (``predict.py --calibrate``): not to be called while other threads predict."""
        clips = [c if isinstance(c, ClipInput) else ClipInput(Path(c)) for c in clips]
        loader = self._loader(clips, batch_size, num_workers)
        features, failures = [], []
        for batch in loader:
            failures += [
                PredictionFailure(str(clips[i].path), reason) for i, reason in batch["failed"].items()
            ]
            if batch["video"] is not None:
                video = batch["video"].flatten(0, 1).to(self.device)  # [B*n_test, C, S, h, w]
                view_features = self.model.forward_features(video)  # [B*n_test, V, D]
                features.append(view_features.flatten(1).float().cpu())  # [B*n_test, V*D]
        if not features:
            raise ValueError("no reference clip could be read")
        self.features = FeatureGaussian.fit(torch.cat(features))
        return self.features, failures

    def probabilities(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, n_test, C, S, h, w]`` -> class probabilities ``[B, K]`` (softmax averaged over n_test)."""
        return self.forward(video)[0]

    def uncertainty(self, scores: dict[str, float]) -> Uncertainty:
        """One clip's scores with the flag's score and threshold (None when uncalibrated)."""
        if self.calibration is None:
            return Uncertainty(scores, self.ood_score, None, self.calibration_status)
        return Uncertainty(scores, self.ood_score, self.calibration.threshold)

    def _prediction(
        self,
        path: Path,
        clip: LoadedClip,
        probs: torch.Tensor,
        label: int | None,
        scores: dict[str, float] | None = None,
    ) -> ClipPrediction:
        values, labels = probs.topk(self.top_k)
        splits = np.cumsum(self.config.views)[:-1]  # flat order: view0's frames, view1's, ...
        return ClipPrediction(
            path=str(path),
            top_k=[self.element(int(i), float(v)) for v, i in zip(values.tolist(), labels.tolist())],
            num_frames=clip.num_frames,
            frame_indices=[v.tolist() for v in np.split(clip.frame_indices[0], splits)],
            frames=np.split(clip.frames, splits) if clip.frames is not None else None,
            label=label,
            uncertainty=self.uncertainty(scores) if scores is not None else None,
        )

    def predict(self, path: str | os.PathLike, label: int | None = None) -> ClipPrediction:
        """Top-k of one clip, with its decoded frames per view and the encoder's input. Raises
        :class:`DecodeError` for bad files."""
        start = time.perf_counter()
        clip = self.load(path, keep_frames=True)
        probs, scores = self.forward(clip.video[None])
        row = {name: float(v[0]) for name, v in scores.items()}
        prediction = self._prediction(Path(path), clip, probs[0], label, row)
        prediction.video = clip.video
        prediction.seconds = time.perf_counter() - start
        return prediction

    def predict_many(
        self,
        clips: Sequence[ClipInput | str | os.PathLike],
        batch_size: int = 8,
        num_workers: int = 0,
        progress: bool = False,
    ) -> Iterator[ClipPrediction | PredictionFailure]:
        """One result per clip, in input order; unreadable clips become :class:`PredictionFailure`."""
        clips = [c if isinstance(c, ClipInput) else ClipInput(Path(c)) for c in clips]
        loader = self._loader(clips, batch_size, num_workers)
        bar = tqdm(total=len(clips), desc="predict", unit="clip", disable=not progress)
        try:
            for batch in loader:
                start = time.perf_counter()
                results: dict[int, ClipPrediction | PredictionFailure] = {}
                if batch["video"] is not None:
                    probs, scores = self.forward(batch["video"])  # [B, K], [B] per score
                    seconds = (time.perf_counter() - start) / len(batch["clips"])
                    for row, (index, loaded) in enumerate(batch["clips"]):
                        clip = clips[index]
                        values = {name: float(v[row]) for name, v in scores.items()}
                        results[index] = self._prediction(clip.path, loaded, probs[row], clip.label, values)
                        results[index].seconds = seconds
                for index, reason in batch["failed"].items():
                    results[index] = PredictionFailure(str(clips[index].path), reason, clips[index].label)
                for index in sorted(results):
                    yield results[index]
                bar.update(len(results))
        finally:
            bar.close()
