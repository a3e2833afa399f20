"""EVA-CLIP-g/14 per frame: output of the penultimate transformer block, CLS dropped, patch tokens pooled.

Shape notation: B batch, S frames, F = B*S, gh x gw patch grid, g pooled grid side, D width.

    video [B, 3, S, H, W] ──per frame──► block[depth + layer] output [F, D, gh, gw] ──pool g x g──►
        tokens [B, S*g*g, D]   (+ sinusoidal frame code with frame_position="sinusoidal")

Backends:

- ``timm`` (default): ``timm.create_model(model_name)`` (``eva_giant_patch14_clip_224``), weights from a
  local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file (or a directory holding one), read with
  ``weights_only``; EVA-CLIP / open_clip checkpoint layouts are converted by timm's own EVA filter. Any
  other ``path_or_id`` is a timm pretrained name or ``hf-hub:`` id, e.g.
  ``eva_giant_patch14_clip_224.laion400m``, downloaded by timm. ``model_kwargs`` override the
  architecture (tests build a tiny EVA this way).
- ``open_clip`` (optional extra ``sefar-toolkit[clip]``): ``open_clip.create_model("EVA01-g-14",
  pretrained=path_or_tag)``, or a ``hf-hub:`` / ``local-dir:`` model id; its vision tower wraps the
  same timm EVA (``visual.trunk``), read the same way.

Normalisation: EVA-CLIP's own statistics (OpenAI's CLIP mean/std), as timm's ``pretrained_cfg`` of
``model_name`` records them, or the timm ``config.json`` beside a local weights file when there is one;
open_clip's model preprocessing config for that backend.

The encoder's ``options`` record timm's ``architecture`` name of the trunk; the builder takes it back (a
description rebuilds the encoder): it is the timm backend's default ``model_name``, and the trunk built
from ``path_or_id`` must be of that architecture.

The block output comes from timm's ``forward_intermediates`` (it stops after the requested block), or, on
a timm without it, from a forward hook on that block.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .base import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    FrameEncoder,
    Preprocess,
    check_architecture,
    check_layer,
    load_weights_file,
    timm_architecture,
    timm_preprocess,
)

DEFAULT_MODEL = {"timm": "eva_giant_patch14_clip_224", "open_clip": "EVA01-g-14"}
WEIGHT_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
)


class EVAVideoEncoder(FrameEncoder):
    """A timm EVA trunk applied per frame (see the module docstring)."""

    name = "eva"

    def __init__(
        self,
        trunk: nn.Module,
        preprocess: Preprocess,
        layer: int = -2,
        grid: int = 1,
        frame_position: str = "none",
        **options: Any,
    ):
        block = check_layer(layer, len(trunk.blocks))
        gh, gw = trunk.patch_embed.grid_size
        if grid > min(gh, gw):
            raise ValueError(f"grid {grid} is larger than the {gh}x{gw} patch grid")
        options = {"architecture": timm_architecture(trunk), **options, "layer": layer, "grid": grid}
        super().__init__(preprocess, trunk.embed_dim, grid, options, frame_position=frame_position)
        self.trunk = trunk
        self.block = block

    def frame_patches(self, frames: torch.Tensor) -> torch.Tensor:
        if hasattr(self.trunk, "forward_intermediates"):
            (patches,) = self.trunk.forward_intermediates(
                frames,
                indices=[self.block],
                norm=False,  # the raw block output, as LLaVA-style feature layers are
                stop_early=True,  # skip the blocks after it
                output_fmt="NCHW",
                intermediates_only=True,
            )
            return patches  # [F, D, gh, gw], prefix tokens dropped
        return block_output_by_hook(self.trunk, frames, self.block)


def block_output_by_hook(trunk: nn.Module, frames: torch.Tensor, block: int) -> torch.Tensor:
    """``[F, D, gh, gw]`` output of ``trunk.blocks[block]`` captured during ``forward_features``
    (for timm versions without ``forward_intermediates``; runs every block)."""
    captured: list[torch.Tensor] = []
    handle = trunk.blocks[block].register_forward_hook(lambda _m, _inp, out: captured.append(out))
    try:
        trunk.forward_features(frames)
    finally:
        handle.remove()
    tokens = captured[0][:, trunk.num_prefix_tokens :]  # [F, N, D], CLS (and registers) dropped
    gh, gw = trunk.patch_embed.grid_size
    return tokens.transpose(1, 2).reshape(len(frames), -1, gh, gw)


def build_eva(
    path_or_id: str | os.PathLike,
    backend: Literal["timm", "open_clip"] = "timm",
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    num_frames: int = 8,
    layer: int = -2,
    grid: int = 1,
    architecture: str | None = None,
    frame_position: str = "none",
) -> EVAVideoEncoder:
    """EVA-CLIP video encoder: ``num_frames`` frames, block ``layer`` (-2 = penultimate), ``grid x grid``
    tokens per frame (1 = mean over patches); ``frame_position="sinusoidal"`` adds the frame-index code
    of the frame sequence layout (mllm.encoders.base). ``model_name`` defaults to ``architecture`` (timm
    backend), else the backend's EVA-CLIP-g/14. ``architecture``: timm's name of the trunk, as the
    encoder's description records it; when given, the trunk must be of it."""
    default = architecture if backend == "timm" else None
    model_name = model_name or default or DEFAULT_MODEL.get(backend, "")
    if backend == "timm":
        model_kwargs = dict(model_kwargs or {})
        trunk, weights_file = _timm_trunk(path_or_id, model_name, model_kwargs)
        preprocess = timm_preprocess(trunk, num_frames, weights_file)
        options = {"backend": backend, "model_kwargs": model_kwargs}
    elif backend == "open_clip":
        if model_kwargs:
            raise ValueError(
                "model_kwargs apply to the timm backend; open_clip models come from their config"
            )
        trunk, preprocess = _open_clip_trunk(path_or_id, model_name, num_frames)
        options = {"backend": backend}
    else:
        raise ValueError(f"unknown EVA backend {backend!r}; choose 'timm' or 'open_clip'")
    check_architecture(trunk, architecture, path_or_id)
    return EVAVideoEncoder(
        trunk.eval(), preprocess, layer=layer, grid=grid, frame_position=frame_position, **options
    )


def _timm_trunk(
    path_or_id: str | os.PathLike, model_name: str, model_kwargs: dict[str, Any]
) -> tuple[nn.Module, Path | None]:
    """The trunk, and the local weights file it was read from (None: timm loaded a pretrained name)."""
    import timm
    from timm.models.eva import checkpoint_filter_fn

    path = Path(path_or_id)
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
        path = found[0]
    if path.is_file():
        trunk = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
        load_weights_file(trunk, path, checkpoint_filter_fn)
        return trunk, path
    try:  # a timm pretrained name or hf-hub id: timm downloads (or finds in its cache) the weights
        return timm.create_model(str(path_or_id), pretrained=True, num_classes=0, **model_kwargs), None
    except Exception as err:  # offline, unknown name: say which and how to fix
        raise FileNotFoundError(
            f"{str(path_or_id)!r} is not a weights file or directory, and timm could not load it as a "
            f"pretrained model name / hub id ({type(err).__name__}: {err})"
        ) from err


def _open_clip_trunk(
    path_or_id: str | os.PathLike, model_name: str, num_frames: int
) -> tuple[nn.Module, Preprocess]:
    try:
        import open_clip
    except ImportError:
        raise ImportError(
            "the open_clip EVA backend needs open_clip: pip install sefar-toolkit[clip] "
            "(or use backend='timm', which reads the same checkpoints)"
        ) from None
    source = str(path_or_id)
    if source.startswith(("hf-hub:", "local-dir:")):
        model = open_clip.create_model(source)  # the id names config and weights together
    else:
        # require_pretrained: an unknown tag must fail, not leave a random tower
        model = open_clip.create_model(model_name, pretrained=source, require_pretrained=True)
    trunk = getattr(model.visual, "trunk", None)
    if trunk is None or not hasattr(trunk, "blocks"):
        raise ValueError(
            f"{model_name or source}: the open_clip vision tower is not a timm EVA (no visual.trunk)"
        )
    preprocess = timm_preprocess(trunk, num_frames)
    mean = getattr(model.visual, "image_mean", None) or OPENAI_CLIP_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_CLIP_STD
    return trunk, Preprocess(preprocess.views, preprocess.image_size, tuple(mean), tuple(std))
