"""Sliding-window clip features of a routine: what HAAN's MLPs read (FineGym's official features are I3D
on 16-frame clips; here an exported SeFAR encoder's fused feature, or any :class:`WindowEncoder`, e.g. the
frame-pool baseline that scripts/extract_routine_features.py builds from mllm's encoders).

A routine of N frames is cut into windows ``[start, start + window)`` every ``stride`` frames, the last one
moved back to end at the routine's end (a routine shorter than a window gets one window, whose segment
centres repeat frames). Each window goes through the encoder exactly as a trimmed clip does at evaluation
(dual-level segment centres, short side resized, centre crop, the export's normalisation,
``sefar_encoder.transforms.ClipTransform.eval``) and gives the encoder's fused feature ``h``.

A feature folder holds one ``<routine_id>.npz`` per routine (``features [T, Dh]`` float32, ``starts [T]``,
``num_frames``, ``fps``) and ``features.json`` (encoder, window, stride, width): a folder is tied to one
encoder and window layout, and :func:`read_feature_folder` refuses to mix.

Shape notation: T windows, S frames per window (sum of the encoder's views), Dh feature width.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from sefar_encoder.decoding import open_video
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.runtime.atomic import write_atomic, write_json_atomic
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import AugmentConfig, ClipTransform

FEATURES_META = "features.json"


class FeatureFolderError(ValueError):
    """A feature folder is missing, incomplete or made by another encoder/window layout."""


@dataclass
class RoutineFeatures:
    """The windows of one routine."""

    features: np.ndarray  # [T, Dh] float32
    starts: np.ndarray  # [T] first frame of each window
    num_frames: int
    fps: float


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """First frames of the windows covering ``num_frames`` frames (see the module docstring)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window}, {stride}")
    if num_frames <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_frames - window + 1, stride, dtype=np.int64)
    if starts[-1] + window < num_frames:
        starts = np.append(starts, num_frames - window)
    return starts


def video_fps(path: str | Path) -> float:
    """The frame rate the container declares for its first video stream."""
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    if not rate:
        raise FeatureFolderError(f"{path}: the video declares no frame rate")
    return float(rate)


@dataclass(frozen=True)
class WindowEncoder:
    """What turns the frames of a window into one feature: ``encode(video [b, C, S, h, w]) -> [b, D]`` and the
    input it expects (frames sampled per ``views`` as the dual-level sampler does, resized and centre-cropped
    to ``image_size``, normalised with ``mean``/``std``)."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    views: tuple[int, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def sefar_window_encoder(encoder: SeFAREncoder) -> WindowEncoder:
    """An exported SeFAR encoder's fused feature ``h`` per window, with the export's own preprocessing."""
    encoder.eval()
    pre = encoder.preprocessing
    return WindowEncoder(lambda video: encoder(video).h, tuple(pre.views), pre.image_size, pre.mean, pre.std)


@torch.no_grad()
def encode_routine(
    encoder: WindowEncoder | SeFAREncoder, path: str | Path, window: int, stride: int, batch_size: int = 32
) -> RoutineFeatures:
    """The window features of one routine video (decoded batch by batch: only the frames the windows use).
    A :class:`SeFAREncoder` stands for :func:`sefar_window_encoder` of it."""
    if isinstance(encoder, SeFAREncoder):
        encoder = sefar_window_encoder(encoder)
    transform = ClipTransform(
        encoder.views, encoder.image_size, AugmentConfig(mean=encoder.mean, std=encoder.std)
    )
    offsets = DualLevelSampler(encoder.views).at_offset(window, 0.5).flat  # [S] frames inside a window
    clip = open_video(path)
    n = clip.num_frames
    starts = window_starts(n, window, stride)
    chunks = []
    for first in range(0, len(starts), batch_size):
        indices = np.minimum(starts[first : first + batch_size, None] + offsets[None, :], n - 1)  # [b, S]
        wanted = np.unique(indices)
        frames = clip.get(wanted)  # [U, H, W, 3]
        position = np.searchsorted(wanted, indices)
        video = torch.stack([transform.eval([frames[row]])[0] for row in position])  # [b, C, S, h, w]
        chunks.append(encoder.encode(video).float().numpy())
    return RoutineFeatures(np.concatenate(chunks), starts, n, video_fps(path))


def write_routine_features(folder: Path, routine_id: str, feats: RoutineFeatures) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # np.savez given a path would append ".npz" to the temporary name
            np.savez(
                f, features=feats.features, starts=feats.starts, num_frames=feats.num_frames, fps=feats.fps
            )

    write_atomic(folder / f"{routine_id}.npz", save)


def write_features_meta(folder: Path, meta: dict) -> None:
    write_json_atomic(folder / FEATURES_META, meta)


def read_features_meta(folder: str | Path) -> dict:
    path = Path(folder) / FEATURES_META
    if not path.is_file():
        raise FeatureFolderError(f"{path}: not a feature folder (scripts/extract_routine_features.py)")
    return json.loads(path.read_text())


def read_feature_folder(
    folder: str | Path, routine_ids: list[str]
) -> tuple[dict[str, RoutineFeatures], dict]:
    """The features of ``routine_ids`` and the folder's meta; a missing routine raises naming it."""
    folder = Path(folder)
    meta = read_features_meta(folder)
    out = {}
    missing = [r for r in routine_ids if not (folder / f"{r}.npz").is_file()]
    if missing:
        raise FeatureFolderError(
            f"{folder}: no features for {len(missing)} routine(s): {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (run scripts/extract_routine_features.py)"
        )
    for r in routine_ids:
        with np.load(folder / f"{r}.npz") as data:
            out[r] = RoutineFeatures(
                data["features"].astype(np.float32),
                data["starts"],
                int(data["num_frames"]),
                float(data["fps"]),
            )
        if out[r].features.shape[1] != meta["feature_dim"]:
            raise FeatureFolderError(
                f"{folder / r}.npz: width {out[r].features.shape[1]}, not {meta['feature_dim']}"
            )
    return out, meta
