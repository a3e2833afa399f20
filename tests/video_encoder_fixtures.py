"""Tiny random checkpoints of every video encoder, in the format each builder of ``mllm.encoders`` reads
(nothing downloaded).

    pytest_plugins = ["video_encoder_fixtures"]                 # the fixture checkpoints
    from video_encoder_fixtures import CASES, SIZE, perturb     # plain helpers

``checkpoints`` maps an encoder name to its saved weights (module scope: a test module may alter its copy).
:data:`CASES` are the builder options a test builds each encoder with, and what the tokens must look like.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from sefar_encoder.model import ModelConfig, SeFAREncoder, build_image_vit

SIZE = 32  # frame pixels of every tiny model
SEFAR_CFG = ModelConfig(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
EVA_KWARGS = {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "img_size": 28}  # patch 14: 2x2
VIT_KWARGS = {"img_size": SIZE, "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2}

# name -> (builder options, expected num_tokens, dim, image size); S = frames per clip.
CASES = {
    "sefar": ({}, len(SEFAR_CFG.views) + 1, 32, SIZE),
    "sefar_frames": ({"token_layout": "frame_mean"}, 8, 32, SIZE),
    "clip": ({"num_frames": 4}, 4, 32, SIZE),
    "clip_grid": ({"num_frames": 4, "grid": 2}, 16, 32, SIZE),
    "eva": ({"num_frames": 4, "model_kwargs": EVA_KWARGS}, 4, 32, 28),
    "eva_grid": ({"num_frames": 4, "grid": 2, "model_kwargs": EVA_KWARGS}, 16, 32, 28),
    "framepool": ({"num_frames": 4}, 1, 32, SIZE),
    "framepool_spatial": ({"num_frames": 4, "spatial_grid": 2}, 5, 32, SIZE),
    "frameseq": ({"num_frames": 4}, 16, 32, SIZE),  # default grid 2, sinusoidal frame code
    "frameseq_plain": ({"num_frames": 4, "grid": 1, "frame_position": "none"}, 4, 32, SIZE),
    "clip_frameseq": ({"num_frames": 4, "grid": 2, "frame_position": "sinusoidal"}, 16, 32, SIZE),
    "eva_frameseq": (
        {"num_frames": 4, "grid": 2, "frame_position": "sinusoidal", "model_kwargs": EVA_KWARGS},
        16,
        32,
        28,
    ),
}


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Random non-trivial values everywhere (inits leave zeros and ones that would hide layout bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def save_state(module: torch.nn.Module, path: Path) -> Path:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny saved checkpoint per encoder, in the format each builder reads."""
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    SeFAREncoder(SEFAR_CFG).eval().save_pretrained(root / "sefar")

    # The SynthGym frame-pretrained backbone layout (scripts/pretrain_image_backbone.py).
    backbone = root / "backbone"
    backbone.mkdir()
    save_state(perturb(build_image_vit(SEFAR_CFG)), backbone / "model.safetensors")
    (backbone / "config.json").write_text(json.dumps({"architecture": dataclasses.asdict(SEFAR_CFG)}))

    eva = timm.create_model("eva_giant_patch14_clip_224", pretrained=False, num_classes=0, **EVA_KWARGS)
    save_state(perturb(eva), root / "eva.safetensors")
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=7, **VIT_KWARGS)
    save_state(perturb(vit), root / "vit.pth")  # with its classifier head: ignored when loading

    from transformers import CLIPVisionConfig, CLIPVisionModel

    clip_cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=SIZE,
        patch_size=8,
    )
    perturb(CLIPVisionModel(clip_cfg)).save_pretrained(root / "clip")
    return {
        "sefar": root / "sefar",
        "framepool": backbone,
        "frameseq": backbone,  # the same frame backbone, kept in time order
        "eva": root / "eva.safetensors",
        "vit": root / "vit.pth",
        "clip": root / "clip",
    }
