"""CLIP ViT (reference: ViT-L/14) per frame, LLaVA-style: transformers ``CLIPVisionModel``, hidden states
of the penultimate layer, CLS dropped, patch tokens pooled spatially per frame.

Shape notation: B batch, S frames, F = B*S, N patches per frame (gh x gw), g pooled grid side, D width.

    video [B, 3, S, H, W] ──per frame──► hidden_states[layer] [F, 1+N, D] ──drop CLS, pool g x g──►
        tokens [B, S*g*g, D]   (+ sinusoidal frame code with frame_position="sinusoidal")

Weights: a local directory written by ``save_pretrained`` (a full ``CLIPModel`` checkpoint such as
``openai/clip-vit-large-patch14`` works too: only its vision tower is read) or a hub id.
Normalisation comes from the checkpoint's ``preprocessor_config.json`` when it has one, else OpenAI's
CLIP constants; frames are resized to the model's ``image_size`` by the data path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FrameEncoder, Preprocess, check_layer

if TYPE_CHECKING:
    from transformers import CLIPVisionModel


class CLIPVideoEncoder(FrameEncoder):
    """``CLIPVisionModel`` applied per frame (see the module docstring)."""

    name = "clip"

    def __init__(
        self,
        model: CLIPVisionModel,
        preprocess: Preprocess,
        layer: int = -2,
        grid: int = 1,
        frame_position: str = "none",
    ):
        config = model.config
        check_layer(layer, config.num_hidden_layers)
        side = config.image_size // config.patch_size
        if grid > side:
            raise ValueError(f"grid {grid} is larger than the {side}x{side} patch grid")
        options = {"layer": layer, "grid": grid}
        super().__init__(preprocess, config.hidden_size, grid, options, frame_position=frame_position)
        self.model = model
        self.layer = layer
        self.side = side

    def frame_patches(self, frames: torch.Tensor) -> torch.Tensor:
        # hidden_states[0] is the embedding output, [i] block i's output: [-2] = penultimate block.
        hidden = self.model(pixel_values=frames, output_hidden_states=True).hidden_states[self.layer]
        patches = hidden[:, 1:]  # [F, N, D], CLS dropped
        return patches.transpose(1, 2).reshape(len(frames), -1, self.side, self.side)  # [F, D, gh, gw]


def build_clip(
    path_or_id: str | os.PathLike,
    num_frames: int = 8,
    layer: int = -2,
    grid: int = 1,
    frame_position: str = "none",
) -> CLIPVideoEncoder:
    """``num_frames`` frames per clip (segment centres), hidden states of ``layer`` (-2 = penultimate),
    each frame pooled to ``grid x grid`` tokens (1 = mean over patches); ``frame_position="sinusoidal"``
    adds the frame-index code of the frame sequence layout (mllm.encoders.base)."""
    from transformers import CLIPVisionModel

    source = str(path_or_id)
    try:
        # float32 whatever the checkpoint stores (hub CLIPs may be fp16, slow or unsupported on CPU);
        # cast the built encoder with .to() for half precision on a GPU.
        model, info = CLIPVisionModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    except OSError as err:  # not a directory and not reachable on the hub
        raise FileNotFoundError(f"cannot load a CLIP vision model from {source!r}: {err}") from None
    if info["missing_keys"]:  # LLaVA's failure mode: a vision tower left partly random, silently
        raise ValueError(f"{source}: weights missing for {sorted(info['missing_keys'])}")
    model.eval()
    processor = _preprocessor_config(source)
    preprocess = Preprocess(
        views=(num_frames,),
        image_size=model.config.image_size,
        mean=tuple(processor.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(processor.get("image_std", OPENAI_CLIP_STD)),
    )
    return CLIPVideoEncoder(model, preprocess, layer=layer, grid=grid, frame_position=frame_position)


def _preprocessor_config(source: str) -> dict[str, Any]:
    """The checkpoint's image-processor settings (local dir or hub cache), or ``{}`` when it has none."""
    local = Path(source) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(source).is_dir():
        return {}
    from transformers.utils import cached_file

    found = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(found).read_text()) if found else {}
