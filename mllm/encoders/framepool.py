"""framepool: an image ViT per frame, features mean-pooled over time — the order-blind baseline.

Shape notation: B batch, S frames, F = B*S, gh x gw patch grid, g pooled grid side, D width.

    video [B, 3, S, H, W] ──per frame──► pooled feature (CLS) [F, D] ──mean over S──► [B, 1, D]
        spatial_grid g > 0: also the normalised patch tokens pooled to g x g per frame, mean over S,
        appended ──► tokens [B, 1 + g*g, D]

Averaging over time throws away frame order on purpose: on SynthGym, pairs such as salto forward vs
backward differ only in temporal direction, which this baseline cannot see (and a reversed clip gives
the same tokens). With the frame-pretrained backbone SeFAR itself starts from, it isolates what the
video model adds.

Weights (``path_or_id``):

- a directory with ``model.safetensors`` + ``config.json`` holding an ``"architecture"`` (a
  :class:`~sefar_encoder.model.ModelConfig` dict), as ``scripts/pretrain_image_backbone.py`` writes: the
  SynthGym frame-pretrained backbone, built with ``build_image_vit`` and normalised with ImageNet's
  mean/std, as in that pretraining;
- a local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` timm ViT state dict for ``model_name`` (+
  ``model_kwargs``), normalised with the mean/std of the timm ``config.json`` beside it (a hub repo's
  layout), else of ``model_name``'s timm ``pretrained_cfg`` (give the tag: ``vit_base_patch16_224`` alone
  means timm's default tag);
- otherwise a timm pretrained name or ``hf-hub:`` id (downloaded by timm), normalised as its
  ``pretrained_cfg`` says.

The encoder's ``options`` (its description) record timm's ``architecture`` name and, for a backbone
directory, the ViT layout (``backbone``); the builder takes both back, so a description (an MLLM
checkpoint's ``instruction.json``) rebuilds the encoder: ``architecture`` is a weights file's default
``model_name``, and both are checked against what ``path_or_id`` holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from sefar_encoder.detection.features import WindowEncoder
from sefar_encoder.model.encoder import ModelConfig
from sefar_encoder.model.image_vit import build_image_vit, image_vit_kwargs

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    VideoEncoder,
    check_architecture,
    load_weights_file,
    pool_patch_grid,
    timm_architecture,
    timm_preprocess,
)

DEFAULT_MODEL = "vit_base_patch16_224"


class FramePoolEncoder(VideoEncoder):
    """A timm image ViT per frame, averaged over time (see the module docstring)."""

    name = "framepool"

    def __init__(self, vit: nn.Module, preprocess: Preprocess, spatial_grid: int = 0, **options: Any):
        if len(preprocess.views) != 1:
            raise ValueError(f"framepool takes its frames in time order (one view), got {preprocess.views}")
        gh, gw = vit.patch_embed.grid_size
        if not 0 <= spatial_grid <= min(gh, gw):
            raise ValueError(f"spatial_grid must be in [0, {min(gh, gw)}], got {spatial_grid}")
        options = {"architecture": timm_architecture(vit), **options, "spatial_grid": spatial_grid}
        super().__init__(preprocess, vit.embed_dim, 1 + spatial_grid**2, options)
        self.vit = vit
        self.spatial_grid = spatial_grid

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, s, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * s, c, h, w)  # [F, C, H, W]
        features = self.vit.forward_features(frames)  # [F, prefix + N, D], after the final norm
        pooled = self.vit.forward_head(features, pre_logits=True)  # [F, D]: the model's own pooling (CLS)
        tokens = [pooled.view(b, s, 1, -1)]  # [B, S, 1, D]
        if self.spatial_grid:
            gh, gw = self.vit.patch_embed.grid_size
            patches = features[:, self.vit.num_prefix_tokens :].transpose(1, 2).reshape(b * s, -1, gh, gw)
            grid = pool_patch_grid(patches, self.spatial_grid)  # [F, g*g, D]
            tokens.append(grid.view(b, s, grid.shape[1], -1))  # [B, S, g*g, D]
        return torch.cat(tokens, dim=2).mean(dim=1)  # [B, 1 + g*g, D], order-blind


def build_framepool(
    path_or_id: str | os.PathLike,
    num_frames: int = 8,
    spatial_grid: int = 0,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    architecture: str | None = None,
    backbone: dict[str, Any] | None = None,
) -> FramePoolEncoder:
    """Order-blind baseline over ``num_frames`` frames; ``spatial_grid`` g > 0 adds g*g spatial tokens.

    ``model_name`` (default: ``architecture``, else ``vit_base_patch16_224``) / ``model_kwargs`` describe
    a plain timm state-dict file (ignored for a backbone directory, whose ``config.json`` says what it
    is). ``architecture`` / ``backbone`` are what the encoder's description records about its weights
    (timm's architecture name; a backbone directory's ViT layout): when given, the weights must match.
    """
    vit, preprocess, options = load_image_vit(
        path_or_id, num_frames, model_name, model_kwargs, architecture, backbone
    )
    return FramePoolEncoder(vit.eval(), preprocess, spatial_grid=spatial_grid, **options)


def load_image_vit(
    path_or_id: str | os.PathLike,
    num_frames: int,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    architecture: str | None = None,
    backbone: dict[str, Any] | None = None,
) -> tuple[nn.Module, Preprocess, dict[str, Any]]:
    """The image ViT of ``path_or_id`` (the three weight sources of the module docstring), its input for
    ``num_frames`` frames, and the options its encoder records (``backbone`` / ``model_kwargs``); shared
    by ``framepool`` and ``frameseq``, which read the same weights."""
    path = Path(path_or_id)
    model_kwargs = dict(model_kwargs or {})
    if path.is_dir():
        vit, config = load_frame_backbone(path)
        layout = image_vit_kwargs(config)  # the ViT fields, not the video ones
        if backbone is not None and dict(backbone) != layout:
            raise ValueError(
                f"{path}/config.json: backbone {layout} differs from the recorded backbone {dict(backbone)}"
            )
        preprocess = Preprocess((num_frames,), config.img_size, IMAGENET_MEAN, IMAGENET_STD)
        options = {"backbone": layout}
        check_architecture(vit, architecture, path)
    else:
        import timm

        if backbone is not None:
            raise ValueError(
                f"{str(path_or_id)!r}: backbone= describes a backbone directory (config.json + "
                "model.safetensors of scripts/pretrain_image_backbone.py), and this is not one"
            )
        if path.is_file():
            name = model_name or architecture or DEFAULT_MODEL
            vit = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
            check_architecture(vit, architecture, path)  # before the weights: the clearer error
            load_weights_file(vit, path)
        else:
            try:
                vit = timm.create_model(str(path_or_id), pretrained=True, num_classes=0, **model_kwargs)
            except Exception as err:  # offline, unknown name: say which and how to fix
                raise FileNotFoundError(
                    f"{str(path_or_id)!r} is not a backbone directory or weights file, and timm could not "
                    f"load it as a pretrained model name / hub id ({type(err).__name__}: {err})"
                ) from err
            check_architecture(vit, architecture, str(path_or_id))
        preprocess = timm_preprocess(vit, num_frames, path if path.is_file() else None)
        options = {"model_kwargs": model_kwargs}
    return vit.eval(), preprocess, options


def load_frame_backbone(directory: Path) -> tuple[nn.Module, ModelConfig]:
    """The SynthGym frame-pretrained backbone folder: ``config.json`` ("architecture") + weights."""
    meta_file, weights = directory / "config.json", directory / "model.safetensors"
    if not meta_file.is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"{directory}: expected config.json and model.safetensors of an image backbone"
        )
    meta = json.loads(meta_file.read_text())
    if "architecture" not in meta:
        raise ValueError(
            f"{meta_file} has no 'architecture' (a SeFAR video checkpoint? framepool needs the image "
            "backbone written by scripts/pretrain_image_backbone.py)"
        )
    architecture = ModelConfig(**meta["architecture"])
    vit = build_image_vit(architecture, num_classes=0)
    vit.load_state_dict(load_file(str(weights)), strict=True)  # the pretraining script's exact layout
    return vit, architecture


def framepool_window_encoder(path_or_id: str | os.PathLike, num_frames: int = 8) -> WindowEncoder:
    """The frame-pool baseline as the element detector's window encoder (``sefar_encoder.detection``): the
    backbone's pooled feature of ``num_frames`` frames of a window, averaged over time ``[b, D]``."""
    pool = build_framepool(path_or_id, num_frames=num_frames)
    pool.requires_grad_(False).eval()
    pre = pool.preprocess
    return WindowEncoder(lambda video: pool.encode(video)[:, 0], pre.views, pre.image_size, pre.mean, pre.std)
