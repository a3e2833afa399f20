"""frameseq: an image ViT per frame, each frame's tokens kept in time order — the order-aware image baseline.

Shape notation: B batch, S frames, F = B*S, gh x gw patch grid, g pooled grid side, D width.

    video [B, 3, S, H, W] ──per frame──► patch tokens after the final norm [F, D, gh, gw]
        ──pool g x g──► [B, S, g*g, D] ──+ sinusoidal code of the frame index──► tokens [B, S*g*g, D]

How Video-LLaVA / Video-ChatGPT feed an image encoder (CLIP) to the LLM: the per-frame tokens of a few
frames, in time order. Beside ``framepool`` (the same weights, averaged over time: order-blind), it
shows what an image encoder gives when the LLM *can* see order; beside ``sefar``, what the video model
adds. Its token layout is the frame sequence of :class:`~mllm.encoders.base.FrameEncoder`, which the
``clip`` and ``eva`` encoders produce too: ``frameseq`` on CLIP weights is ``encoder: clip`` with
``options: {grid: 2, frame_position: sinusoidal}``.

The frame position is a fixed sinusoid added to the pooled tokens (``frame_position="sinusoidal"``, the
default here; ``"none"`` leaves the frames marked only by their place in the sequence): the encoder is
frozen and its tokens cached, so a fixed code needs no training and lives in the cache with the tokens.

Weights (``path_or_id``): as ``framepool`` reads them (see :mod:`mllm.encoders.framepool`) — the SynthGym
frame-pretrained backbone folder of ``scripts/pretrain_image_backbone.py``, a local timm ViT state dict
(``model_name`` / ``model_kwargs``), or a timm pretrained name / ``hf-hub:`` id. The patch tokens are the
ones ``framepool``'s spatial tokens are made of (after the final norm), so the two baselines differ only
in what happens over time.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .base import FrameEncoder, Preprocess, timm_architecture
from .framepool import load_image_vit


class FrameSeqEncoder(FrameEncoder):
    """A timm image ViT per frame, the frames' pooled tokens in time order (see the module docstring)."""

    name = "frameseq"

    def __init__(
        self,
        vit: nn.Module,
        preprocess: Preprocess,
        grid: int = 2,
        frame_position: str = "sinusoidal",
        **options: Any,
    ):
        gh, gw = vit.patch_embed.grid_size
        if not 1 <= grid <= min(gh, gw):
            raise ValueError(f"grid must be in [1, {min(gh, gw)}] for a {gh}x{gw} patch grid, got {grid}")
        # frame_position always recorded: this builder's default ("sinusoidal") is not the base's ("none").
        options = {
            "architecture": timm_architecture(vit),
            **options,
            "grid": grid,
            "frame_position": frame_position,
        }
        super().__init__(preprocess, vit.embed_dim, grid, options, frame_position=frame_position)
        self.vit = vit

    def frame_patches(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.vit.forward_features(frames)  # [F, prefix + gh*gw, D], after the final norm
        gh, gw = self.vit.patch_embed.grid_size
        patches = features[:, self.vit.num_prefix_tokens :]  # [F, gh*gw, D], CLS (and registers) dropped
        return patches.transpose(1, 2).reshape(len(frames), -1, gh, gw)  # [F, D, gh, gw]


def build_frameseq(
    path_or_id: str | os.PathLike,
    num_frames: int = 8,
    grid: int = 2,
    frame_position: str = "sinusoidal",
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    architecture: str | None = None,
    backbone: dict[str, Any] | None = None,
) -> FrameSeqEncoder:
    """``num_frames`` frames in time order, each pooled to ``grid x grid`` tokens, plus the frame-index
    code (``frame_position``: "sinusoidal" or "none"). ``model_name`` / ``model_kwargs`` /
    ``architecture`` / ``backbone`` as for :func:`~mllm.encoders.framepool.build_framepool`."""
    vit, preprocess, options = load_image_vit(
        path_or_id, num_frames, model_name, model_kwargs, architecture, backbone
    )
    return FrameSeqEncoder(vit, preprocess, grid=grid, frame_position=frame_position, **options)
