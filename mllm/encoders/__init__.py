"""Video encoders behind one interface (SPEC §4.1): ``encode(video [B, C, S, H, W]) -> tokens [B, N, D]``.

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

Every builder takes ``path_or_id`` (local checkpoint or hub id) and keyword options (see each builder);
the encoder comes back frozen, in eval mode, on the CPU (move it with ``.to(device)``). Each encoder
states its input in ``encoder.preprocess`` and hashes weights + options + preprocessing in
``encoder.fingerprint()`` (the feature cache's key).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from .base import FrameEncoder, Preprocess, VideoEncoder, pool_patch_grid
from .clip import CLIPVideoEncoder, build_clip
from .eva import EVAVideoEncoder, build_eva
from .framepool import FramePoolEncoder, build_framepool
from .sefar import SeFARVideoEncoder, build_sefar

ENCODERS: dict[str, Callable[..., VideoEncoder]] = {
    "sefar": build_sefar,
    "clip": build_clip,
    "eva": build_eva,
    "framepool": build_framepool,
}


def build_video_encoder(name: str, path_or_id: str | os.PathLike, **options: Any) -> VideoEncoder:
    """Build encoder ``name`` from ``path_or_id`` with builder ``options``; frozen, eval mode."""
    if name not in ENCODERS:
        raise ValueError(f"unknown video encoder {name!r}; known: {sorted(ENCODERS)}")
    builder = ENCODERS[name]
    accepted = list(inspect.signature(builder).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"video encoder {name!r} has no option(s) {unknown}; its options: {accepted}")
    encoder = builder(path_or_id, **options)
    encoder.requires_grad_(False)
    return encoder.eval()


__all__ = [
    "ENCODERS",
    "CLIPVideoEncoder",
    "EVAVideoEncoder",
    "FrameEncoder",
    "FramePoolEncoder",
    "Preprocess",
    "SeFARVideoEncoder",
    "VideoEncoder",
    "build_video_encoder",
    "pool_patch_grid",
]
