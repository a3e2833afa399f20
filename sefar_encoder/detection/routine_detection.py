"""A trained detector together with the window encoder its features came from: the one way to find the
elements of a new routine video (``scripts/detect.py`` and the demo's routine tab both call it).

    detector = load_routine_detector("runs/detector/detector")    # the encoder its detector.json names
    for d in detector.detect("routine.mp4"):                         # [Detection] (detect's order)
        d.start, d.end, detector.element(d.label), d.score           # seconds, (name, set id, event), score

Per routine: the windows' features (:func:`~sefar_encoder.detection.features.encode_routine`, decoded batch
by batch) → HAAN's clip logits (:func:`~sefar_encoder.detection.detector_export.detector_logits`) → the
detection rule on the clips' spans in seconds (:mod:`sefar_encoder.detection.inference`).

The window encoder is the SeFAR export the detector's feature folder records (``encoder=`` another export
folder, or an already loaded :class:`SeFAREncoder` so that an app loads its weights once); a detector
trained on the frame-pool baseline's features needs ``framepool=`` (``mllm.encoders.framepool.
framepool_window_encoder``: this package does not import ``mllm``). An encoder whose feature width is not
the detector's raises :class:`ConfigError`.

Shape notation: T windows of a routine, D feature width, C classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gym_qa.detection_eval import Detection
from sefar_encoder.detection.detector_export import detector_logits, load_detector
from sefar_encoder.detection.features import WindowEncoder, encode_routine, sefar_window_encoder
from sefar_encoder.detection.haan import HAAN
from sefar_encoder.detection.inference import InferenceConfig, clip_spans, detect
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.runtime.config import ConfigError

FramePoolBuilder = Callable[[str, int], WindowEncoder]  # (weights, frames per window) -> window encoder


@dataclass(frozen=True)
class RoutineDetector:
    """A loaded detector export (eval mode), its detection rule, its ``detector.json`` and its window
    encoder."""

    model: HAAN
    rule: InferenceConfig
    meta: dict[str, Any]
    encoder: WindowEncoder

    @property
    def layout(self) -> dict[str, Any]:
        """The feature layout the detector was trained on: ``encoder``, ``window``, ``stride`` (frames),
        ``feature_dim``."""
        return self.meta["features"]

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    def element(self, label: int) -> tuple[str, int, str]:
        """Class ``label``'s name, set id and event code (``detector.json``'s ``class_names``)."""
        name, set_id, event = self.meta["class_names"][str(label)]
        return str(name), int(set_id), str(event)

    def detect(
        self, path: str | os.PathLike, routine_id: str | None = None, batch_size: int = 32
    ) -> list[Detection]:
        """The element segments of one routine video (``routine_id`` default: the file's stem), in
        :func:`~sefar_encoder.detection.inference.detect`'s order (class by class, then time). Raises
        :class:`~sefar_encoder.decoding.DecodeError` for a file that does not decode."""
        path = Path(path)
        window, stride = int(self.layout["window"]), int(self.layout["stride"])
        feats = encode_routine(self.encoder, path, window, stride, batch_size)  # [T, D]
        spans = clip_spans(feats.starts, window, stride, feats.fps, feats.num_frames)  # [T, 2] seconds
        logits = detector_logits(self.model, torch.from_numpy(feats.features)).numpy()  # [T, C]
        return detect(routine_id or path.stem, logits, spans, self.rule)


def load_routine_detector(
    directory: str | os.PathLike,
    encoder: str | os.PathLike | SeFAREncoder | None = None,
    framepool: FramePoolBuilder | None = None,
    loaded: Mapping[str | os.PathLike, SeFAREncoder] | None = None,
) -> RoutineDetector:
    """The detector exported to ``directory`` (``scripts/train_detector.py``) with its window encoder:
    ``encoder`` (an export folder or a loaded encoder) or, by default, the one its feature folder records.
    ``loaded``: encoders an app has already loaded, by export folder; the one the detector needs is used
    instead of a second copy (on its device: windows go there and features come back to the CPU).
    Raises :class:`ConfigError` for a folder that is not a detector export, a frame-pool detector without
    ``framepool``, or an encoder whose feature width differs from the detector's."""
    model, rule, meta = load_detector(directory)
    layout = meta["features"]
    if layout["encoder"] == "framepool" and encoder is None:  # the frame-pool baseline's features
        if framepool is None:
            raise ConfigError(
                f"{directory}: trained on frame-pool features; give the frame-pool window encoder "
                "(mllm.encoders.framepool.framepool_window_encoder) or a SeFAR encoder of its width"
            )
        window_encoder = framepool(layout["framepool_weights"], int(layout["framepool_frames"]))
    else:
        source = encoder if encoder is not None else layout["encoder"]
        known = {Path(k).resolve(): v for k, v in (loaded or {}).items()}
        if not isinstance(source, SeFAREncoder) and Path(source).resolve() in known:
            source = known[Path(source).resolve()]
        sefar = source if isinstance(source, SeFAREncoder) else SeFAREncoder.from_pretrained(source)
        if sefar.config.resolved_fusion_dim != layout["feature_dim"]:
            where = "the given encoder" if isinstance(source, SeFAREncoder) else str(source)
            raise ConfigError(
                f"{where}: features of width {sefar.config.resolved_fusion_dim}, the detector "
                f"{directory} reads {layout['feature_dim']}"
            )
        window_encoder = sefar_window_encoder(sefar)
        device = next(sefar.parameters()).device
        if device.type != "cpu":  # encode_routine makes its windows and reads the features on the CPU
            encode = window_encoder.encode
            window_encoder = replace(window_encoder, encode=lambda video: encode(video.to(device)).cpu())
    return RoutineDetector(model, rule, meta, window_encoder)
