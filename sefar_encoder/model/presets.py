"""Named encoder sizes as a plain dict (no global registry): ``timesformer_<size>_p<patch>_<pixels>``.

    cfg = model_config("timesformer_tiny_p16_64", num_classes=12)     # a ModelConfig to nest or edit
    encoder = build_encoder("timesformer_base_p16_224", num_classes=99)

Every preset's backbone has the same layout as a timm image ViT of the same width/depth/heads/patch,
so ``load_image_vit`` can start it from such a checkpoint (``IMAGE_VIT`` names the timm model for the
ImageNet-sized ones; the CPU presets start from a SynthGym frame-pretrained ViT built with
``image_vit_kwargs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .encoder import ModelConfig, SeFAREncoder

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's backbone: ViT-B/16 at 224 px
    "timesformer_base_p16_224": {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
    },
    "timesformer_small_p16_224": {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
    },
    # CPU scale (SynthGym): 64 px frames; p16 = 4x4 tokens per frame (fast), p8 = 8x8 (finer, ~4x cost)
    "timesformer_tiny_p16_64": {
        "img_size": 64,
        "patch_size": 16,
        "embed_dim": 192,
        "depth": 4,
        "num_heads": 4,
        "drop_path_rate": 0.0,
    },
    "timesformer_tiny_p8_64": {
        "img_size": 64,
        "patch_size": 8,
        "embed_dim": 192,
        "depth": 4,
        "num_heads": 4,
        "drop_path_rate": 0.0,
    },
}

# timm image models whose checkpoints match a preset's backbone one to one
IMAGE_VIT: dict[str, str] = {
    "timesformer_base_p16_224": "vit_base_patch16_224",
    "timesformer_small_p16_224": "vit_small_patch16_224",
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name`` with ``overrides`` (any ModelConfig field) applied."""
    if name not in PRESETS:
        raise KeyError(f"unknown encoder preset '{name}'; known: {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown ModelConfig fields {sorted(unknown)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def build_encoder(name: str, class_names: list[str] | None = None, **overrides: Any) -> SeFAREncoder:
    """A randomly initialised :class:`SeFAREncoder` of preset ``name``."""
    return SeFAREncoder(model_config(name, **overrides), class_names=class_names)
