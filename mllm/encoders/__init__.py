"""Video encoders behind one interface (docs/DESIGN.md §Video encoders):
``encode(video [B, C, S, H, W]) -> tokens [B, N, D]``.

Shape notation: B batch, C = 3 channels, S frames, H/W pixels, N tokens per clip, D token width.

    encoder = build_video_encoder("clip", "openai/clip-vit-large-patch14", grid=2)
    dataset = encoder.preprocess.eval_dataset("data/synthgym/test.csv")   # the data path's eval pipeline
    tokens = encoder.encode(dataset[0]["video"])                          # [1, S*4, 1024]

| name        | what                                                        | tokens ``[B, N, D]``          |
|-------------|-------------------------------------------------------------|-------------------------------|
| ``sefar``     | SeFAR checkpoint dir; per-view CLS + fused h, or per frame  | ``V+1`` or ``S``                  |
| ``clip``      | transformers ``CLIPVisionModel``, penultimate layer per frame | ``S*g*g``                       |
| ``eva``       | EVA-CLIP-g/14 (timm, or open_clip extra), penultimate block   | ``S*g*g``                       |
| ``framepool`` | image ViT per frame, mean over time (order-blind baseline)  | ``1`` (+ ``g*g`` spatial)          |
| ``frameseq``  | image ViT per frame, frames in time order + frame-index code  | ``S*g*g``                       |

``clip``, ``eva`` and ``frameseq`` share one token layout, the frame sequence (frame-major, time order,
``frame_position="sinusoidal"`` adds a fixed code of the frame index; :class:`FrameEncoder`): the
order-aware image-encoder baseline of Video-LLaVA / Video-ChatGPT is ``frameseq`` on the SynthGym
frame backbone, ``clip`` / ``eva`` with ``options: {grid: 2, frame_position: sinusoidal}`` on CLIP /
EVA-CLIP weights (``features.encoder`` and ``features.options`` of an MLLM stage config).

Every builder takes ``path_or_id`` (local checkpoint or hub id) and keyword options (see each builder);
the encoder comes back frozen, in eval mode, on the CPU (move it with ``.to(device)``). Each encoder
states its input in ``encoder.preprocess`` and hashes weights + options + preprocessing in
``encoder.fingerprint()`` (the feature cache's key).

``encoder.describe()`` (written into the feature cache index, and from there into an MLLM checkpoint's
``instruction.json``) builds the same encoder again from the same weights::

    described = encoder.describe()
    again = build_video_encoder(described["name"], weights, **builder_options(described))
    assert again.fingerprint() == encoder.fingerprint()

Every key an encoder writes into its ``options`` is a keyword of its builder (a test holds every encoder
to it); :func:`builder_options` adds the builder arguments the description holds under ``preprocess``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from .base import (
    FRAME_POSITIONS,
    FrameEncoder,
    Preprocess,
    VideoEncoder,
    pool_patch_grid,
    sinusoidal_frame_position,
)
from .clip import CLIPVideoEncoder, build_clip
from .eva import EVAVideoEncoder, build_eva
from .framepool import FramePoolEncoder, build_framepool
from .frameseq import FrameSeqEncoder, build_frameseq
from .sefar import SeFARVideoEncoder, build_sefar

ENCODERS: dict[str, Callable[..., VideoEncoder]] = {
    "sefar": build_sefar,
    "clip": build_clip,
    "eva": build_eva,
    "framepool": build_framepool,
    "frameseq": build_frameseq,
}

# Builder arguments that a description records under "preprocess" (the input), not under "options".
_FROM_PREPROCESS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "num_frames": lambda p: sum(p["views"]),  # frame encoders: one view, in time order
    "mean": lambda p: tuple(p["mean"]),  # sefar: the normalisation the MLLM's features were made with
    "std": lambda p: tuple(p["std"]),
}


def builder_options(description: Mapping[str, Any]) -> dict[str, Any]:
    """Builder options that rebuild the encoder ``description`` (:meth:`VideoEncoder.describe`, possibly
    read back from JSON) came from: its ``options``, plus the arguments of its builder that the
    description holds under ``preprocess`` (frames per clip, normalisation)."""
    name = description.get("name")
    if name not in ENCODERS:
        raise ValueError(
            f"the encoder description names an unknown video encoder {name!r}; known: {sorted(ENCODERS)}"
        )
    options = dict(description.get("options") or {})
    preprocess = description.get("preprocess")
    if preprocess:
        accepted = _builder_parameters(name)
        for key, read in _FROM_PREPROCESS.items():
            if key in accepted and key not in options:
                options[key] = read(preprocess)
    return options


def _builder_parameters(name: str) -> list[str]:
    """The keyword options of encoder ``name``'s builder (everything after ``path_or_id``)."""
    return list(inspect.signature(ENCODERS[name]).parameters)[1:]


def build_video_encoder(name: str, path_or_id: str | os.PathLike, **options: Any) -> VideoEncoder:
    """Build encoder ``name`` from ``path_or_id`` with builder ``options``; frozen, eval mode."""
    if name not in ENCODERS:
        raise ValueError(f"unknown video encoder {name!r}; known: {sorted(ENCODERS)}")
    builder = ENCODERS[name]
    accepted = _builder_parameters(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"video encoder {name!r} has no option(s) {unknown}; its options: {accepted}")
    encoder = builder(path_or_id, **options)
    encoder.requires_grad_(False)
    return encoder.eval()


__all__ = [
    "ENCODERS",
    "FRAME_POSITIONS",
    "CLIPVideoEncoder",
    "EVAVideoEncoder",
    "FrameEncoder",
    "FramePoolEncoder",
    "FrameSeqEncoder",
    "Preprocess",
    "SeFARVideoEncoder",
    "VideoEncoder",
    "build_video_encoder",
    "builder_options",
    "pool_patch_grid",
    "sinusoidal_frame_position",
]
