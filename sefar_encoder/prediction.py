"""Predict the elements of video clips with an exported encoder: the library behind ``scripts/predict.py``
and the demo.

    predictor = Predictor("runs/quickstart/encoder")          # a save_pretrained directory
    p = predictor.predict("clip.mp4")                          # Prediction, or DecodeError for a bad file
    p.top_k[0].name, p.top_k[0].probability, p.top_k[0].set_name, p.top_k[0].event_name
    p.frames[v], p.frame_indices[v]                            # the decoded frames of view v, and where from
    for result in predictor.predict_many(read_inputs("clips/")):   # Prediction | PredictionFailure
        ...                                                    # one per input, in input order, never raises

Every clip goes through the data path's deterministic eval pipeline with the encoder's ``views`` and
``img_size`` (segment centres, short side resized to the crop size, one centre crop): the same
sampler, decoder and transform as ``VideoClipDataset(mode="eval")``, which evaluates the encoder during
training and feeds the MLLM's feature cache (a test checks the tensors are equal)::

    file ──open_video──► num_frames ──DualLevelSampler.eval──► indices [n_offsets, S]
         ──clip.get (ONE decode)──► frames [n_offsets*S, H, W, 3] ──ClipTransform.eval──► [n_test, C, S, h, w]
         ──encoder──► softmax, averaged over n_test ──► top-k (+ set, event from the hierarchy)

Set and event names come from the checkpoint's ``hierarchy.json`` (absent: only labels and names).
The normalisation is the data path's default (ImageNet mean/std), which the training configs use; a
checkpoint does not record it, so pass ``mean``/``std`` if an encoder was trained with others.

Shape notation: B batch, n_test = temporal offsets × spatial crops, C = 3, S = sum(views) frames,
H/W source pixels, h/w = img_size, K classes.
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

from gym_qa.clips import VIDEO_EXTENSIONS
from gym_qa.hierarchy import EVENT_NAMES, Hierarchy
from sefar_encoder.dataset import SkippedSample
from sefar_encoder.decoding import Backend, DecodeError, open_video
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import AugmentConfig, ClipTransform, one_thread


class InputError(ValueError):
    """The inputs cannot be listed (missing folder or list file, malformed list line, nothing to predict)."""


@dataclass(frozen=True)
class ClipInput:
    """A clip to predict; ``label`` is its known class, when a labeled list file gave one."""

    path: Path
    label: int | None = None


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
class Prediction:
    """The encoder's answer for one clip.

    ``frame_indices[v]`` are the indices (in the file) of the frames view v saw; ``frames[v]`` are those
    frames as decoded, ``[T_v, H, W, 3]`` uint8 (first temporal offset; ``None`` in batch mode).
    """

    path: str
    top_k: list[ElementScore]
    num_frames: int
    frame_indices: list[list[int]]
    frames: list[np.ndarray] | None = field(default=None, repr=False)
    label: int | None = None  # the known class of the input, if any
    seconds: float = 0.0  # decode + forward time of this clip (batch mode: its share of the batch)

    @property
    def top1(self) -> ElementScore:
        return self.top_k[0]

    @property
    def correct(self) -> bool | None:
        """Top-1 equals the known label (None without a label)."""
        return None if self.label is None else self.top1.label == self.label

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the frames themselves are left out)."""
        record: dict[str, Any] = {
            "path": self.path,
            "ok": True,
            "top_k": [score.to_record() for score in self.top_k],
            "num_frames": self.num_frames,
            "frame_indices": self.frame_indices,
        }
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


# ---- inputs -------------------------------------------------------------------------------------------


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def read_inputs(source: str | os.PathLike, recursive: bool = False) -> list[ClipInput]:
    """The clips named by ``source``: a folder (its video files, sorted), a video file, or a list file.

    A list file holds one clip per line: ``<path>`` or ``<path> <label>`` (the SeFAR list format),
    paths absolute or relative to the list's folder; blank lines and ``#`` comments are skipped, CRLF
    accepted. Missing or unreadable clips are NOT checked here: they become :class:`PredictionFailure`
    records when predicted. Raises :class:`InputError` for a missing source, a malformed line or nothing
    to predict.
    """
    source = Path(source)
    if source.is_dir():
        candidates = source.rglob("*") if recursive else source.iterdir()
        clips = [ClipInput(p) for p in sorted(candidates) if p.is_file() and is_video_file(p)]
        if not clips:
            extensions = ", ".join(VIDEO_EXTENSIONS)
            raise InputError(f"{source}: no video files ({extensions}) in this folder")
        return clips
    if not source.is_file():
        raise InputError(f"{source}: no such folder, video or list file")
    if is_video_file(source):
        return [ClipInput(source)]
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: neither a video file nor a UTF-8 list file") from None
    base = source.parent.resolve()
    clips = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 1:
            path_str, label = parts[0], None
        elif len(parts) == 2 and parts[1].isdigit():
            path_str, label = parts[0], int(parts[1])
        else:
            raise InputError(f"{source}:{lineno}: expected '<path>' or '<path> <label>', got {raw!r}")
        path = Path(path_str)
        clips.append(ClipInput(path if path.is_absolute() else Path(os.path.normpath(base / path)), label))
    if not clips:
        raise InputError(f"{source}: the list names no clips")
    return clips


def probe_duration(path: str | os.PathLike) -> float | None:
    """Duration of a clip in seconds from its container header (nothing decoded); None if unknown.

    A file that cannot be opened returns None: decoding reports it properly afterwards.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return None
    return None


# ---- the predictor ------------------------------------------------------------------------------------


@dataclass
class LoadedClip:
    """One clip through the eval pipeline: ``video [n_test, C, S, h, w]``, ``frame_indices [n_offsets, S]``
    and the decoded ``frames [S, H, W, 3]`` of the first offset (None unless asked for)."""

    video: torch.Tensor
    frame_indices: np.ndarray
    num_frames: int
    frames: np.ndarray | None = None


class EvalPipeline:
    """The data path's eval pipeline (what ``VideoClipDataset(mode="eval")`` does per sample), which also
    reports the clip's frame count and keeps the decoded frames for display."""

    def __init__(self, views: tuple[int, ...], image_size: int, augment: AugmentConfig, backend: Backend):
        self.sampler = DualLevelSampler(views)
        self.transform = ClipTransform(views, image_size, augment)
        self.num_offsets = augment.test_offsets
        self.backend = backend

    def load(self, path: str | os.PathLike, keep_frames: bool = False) -> LoadedClip:
        """Decode (once) and transform one clip; raises :class:`DecodeError` for a bad file."""
        with open_video(path, self.backend) as clip:
            samples = self.sampler.eval(clip.num_frames, self.num_offsets)
            flat = np.stack([s.flat for s in samples])  # [n_offsets, S]
            frames = clip.get(flat.reshape(-1))  # [n_offsets*S, H, W, 3]
            num_frames = clip.num_frames
        video = self.transform.eval(np.split(frames, flat.shape[0]))  # [n_test, C, S, h, w]
        first = frames[: flat.shape[1]].copy() if keep_frames else None
        return LoadedClip(video, flat, num_frames, first)


class _EvalClips(Dataset):
    """Clips through an :class:`EvalPipeline` whose items never raise: a failure becomes a SkippedSample
    with a one-line reason (decoders can fail in ways other than DecodeError; one bad file must not end a
    batch run, in the main process or in a DataLoader worker)."""

    def __init__(self, paths: Sequence[Path], pipeline: EvalPipeline):
        self.paths, self.pipeline = list(paths), pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, LoadedClip] | SkippedSample:
        path = self.paths[index]
        try:
            with one_thread():  # see transforms.one_thread: small per-sample tensors
                return index, self.pipeline.load(path)
        except DecodeError as err:
            return SkippedSample(index, str(path), describe_decode_error(err))
        except Exception as err:  # noqa: BLE001 - reported per clip, see the class docstring
            return SkippedSample(index, str(path), f"cannot decode video ({type(err).__name__}: {err})")


def _collate(batch: list[tuple[int, LoadedClip] | SkippedSample]) -> dict[str, Any]:
    kept = [b for b in batch if not isinstance(b, SkippedSample)]
    return {
        "video": torch.stack([clip.video for _, clip in kept]) if kept else None,  # [B, n_test, C, S, h, w]
        "clips": kept,
        "failed": {b.index: b.reason for b in batch if isinstance(b, SkippedSample)},
    }


def describe_decode_error(err: DecodeError) -> str:
    """The reason of a DecodeError without the file's path (callers name the file themselves)."""
    return f"cannot decode video ({err.reason})" if err.reason else str(err)


class Predictor:
    """An encoder checkpoint + its eval preprocessing + its hierarchy, answering top-k questions.

    ``encoder``: a ``save_pretrained`` directory or a loaded :class:`SeFAREncoder`. ``test_offsets`` and
    ``test_crops`` enable multi-view testing (softmax averaged). Safe to call from several threads
    (inference only, no shared mutable state).
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
        mean: tuple[float, float, float] = AugmentConfig.mean,
        std: tuple[float, float, float] = AugmentConfig.std,
    ):
        if not isinstance(encoder, SeFAREncoder):
            encoder = SeFAREncoder.from_pretrained(encoder, map_location=device)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.model = encoder.to(device).eval()
        self.device = torch.device(device)
        self.config = encoder.config
        self.top_k = min(top_k, self.config.num_classes)
        self.augment = AugmentConfig(mean=mean, std=std, test_offsets=test_offsets, test_crops=test_crops)
        self.pipeline = EvalPipeline(self.config.views, self.config.img_size, self.augment, backend)
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

    @torch.inference_mode()
    def probabilities(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, n_test, C, S, h, w]`` -> class probabilities ``[B, K]`` (softmax averaged over n_test)."""
        b, n_test = video.shape[:2]
        logits = self.model(video.flatten(0, 1).to(self.device)).logits  # [B*n_test, K]
        return logits.float().softmax(dim=-1).view(b, n_test, -1).mean(dim=1).cpu()

    def _prediction(self, path: Path, clip: LoadedClip, probs: torch.Tensor, label: int | None) -> Prediction:
        values, labels = probs.topk(self.top_k)
        splits = np.cumsum(self.config.views)[:-1]  # flat order: view0's frames, view1's, ...
        return Prediction(
            path=str(path),
            top_k=[self.element(int(i), float(v)) for v, i in zip(values.tolist(), labels.tolist())],
            num_frames=clip.num_frames,
            frame_indices=[v.tolist() for v in np.split(clip.frame_indices[0], splits)],
            frames=np.split(clip.frames, splits) if clip.frames is not None else None,
            label=label,
        )

    def predict(self, path: str | os.PathLike, label: int | None = None) -> Prediction:
        """Top-k of one clip, with its decoded frames per view. Raises :class:`DecodeError` for bad files."""
        start = time.perf_counter()
        clip = self.pipeline.load(path, keep_frames=True)
        prediction = self._prediction(Path(path), clip, self.probabilities(clip.video[None])[0], label)
        prediction.seconds = time.perf_counter() - start
        return prediction

    def predict_many(
        self,
        clips: Sequence[ClipInput | str | os.PathLike],
        batch_size: int = 8,
        num_workers: int = 0,
        progress: bool = False,
    ) -> Iterator[Prediction | PredictionFailure]:
        """One result per clip, in input order; unreadable clips become :class:`PredictionFailure`."""
        clips = [c if isinstance(c, ClipInput) else ClipInput(Path(c)) for c in clips]
        loader = DataLoader(
            _EvalClips([c.path for c in clips], self.pipeline),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        bar = tqdm(total=len(clips), desc="predict", unit="clip", disable=not progress)
        try:
            for batch in loader:
                start = time.perf_counter()
                results: dict[int, Prediction | PredictionFailure] = {}
                if batch["video"] is not None:
                    probs = self.probabilities(batch["video"])  # [B, K]
                    seconds = (time.perf_counter() - start) / len(batch["clips"])
                    for row, (index, loaded) in enumerate(batch["clips"]):
                        clip = clips[index]
                        results[index] = self._prediction(clip.path, loaded, probs[row], clip.label)
                        results[index].seconds = seconds
                for index, reason in batch["failed"].items():
                    results[index] = PredictionFailure(str(clips[index].path), reason, clips[index].label)
                for index in sorted(results):
                    yield results[index]
                bar.update(len(results))
        finally:
            bar.close()
