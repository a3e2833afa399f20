"""Start a SeFAR encoder from an image ViT checkpoint (timm ``vit_*_patch*`` key layout).

Sources: a state dict, a local ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``), a
``.safetensors`` file, or a timm model name / ``hf-hub:`` id (downloaded by timm when the hub is
reachable).

Mapping (image key -> encoder key, ``backbone.`` prefix when loading into a :class:`SeFAREncoder`):

    patch_embed.proj.*, cls_token, norm.*, blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*
                                        -> same name, copied bit for bit (shapes must match)
    pos_embed [1, 1+N0, D]              -> pos_embed, bicubic-resampled when the patch grid differs
    blocks.i.attn.*  / blocks.i.norm1.* -> also blocks.i.attn_t.* / blocks.i.norm_t.*  (TimeSformer init)
    (nothing)                           -> blocks.i.proj_t.* set to ZERO, so each frame equals the image ViT
    head.*                              -> ignored (the image classifier), listed in ``ignored_keys``
    anything else                       -> ``unexpected_keys``

Keys the image model cannot provide (temporal branch, time embeddings, fusion head) are listed in
``missing_keys``; ``strict=True`` (default) raises if any other key is missing or anything is unexpected.

Input statistics (:func:`checkpoint_normalisation`): image weights expect pixels normalised as in their
pretraining, which timm records in the checkpoint's ``pretrained_cfg`` (``mean``/``std``): 0.5 for the
original JAX ViT-B/16 (``vit_base_patch16_224.orig_in21k_ft_in1k``) and timm's other ViT tags, OpenAI's
CLIP statistics for EVA-CLIP. A timm name without a tag means timm's default tag (for
``vit_base_patch16_224``: ``augreg2_in21k_ft_in1k``), so configs pin the tag. A local weights file
carries its statistics only in a timm ``config.json`` beside it (the hub's layout); otherwise the
configured ones are kept, and the returned ``source`` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from .encoder import ModelConfig, SeFAREncoder
from .timesformer import TimeSformer

# Encoder keys that exist only in the video model: an image checkpoint is expected not to have them.
VIDEO_ONLY_MARKERS = (".attn_t.", ".norm_t.", ".proj_t.", "time_embeds.", "fusion_head.")
IGNORED_PREFIXES = ("head.",)


@dataclass
class LoadReport:
    """What :func:`load_image_vit` did, key by key (names as in the target module's ``state_dict``)."""

    source: str
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    initialised_from_spatial: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)

    @property
    def unexpected_missing(self) -> list[str]:
        """Missing keys that an image ViT should have provided."""
        return [k for k in self.missing_keys if not any(m in k for m in VIDEO_ONLY_MARKERS)]

    def summary(self) -> str:
        lines = [
            f"loaded {len(self.loaded_keys)} tensors from {self.source}",
            (
                f"missing (video-only, expected): {len(self.missing_keys) - len(self.unexpected_missing)}, "
                f"of which initialised from spatial weights: {len(self.initialised_from_spatial)}"
            ),
            f"ignored (image classifier): {self.ignored_keys}",
        ]
        lines += [f"resized {k}: {v}" for k, v in self.resized.items()]
        if self.unexpected_missing:
            lines.append(f"MISSING spatial keys: {self.unexpected_missing}")
        if self.unexpected_keys:
            lines.append(f"UNEXPECTED keys: {self.unexpected_keys}")
        return "\n".join(lines)


def image_vit_kwargs(config: ModelConfig, num_classes: int = 0) -> dict[str, Any]:
    """Arguments for timm's ``VisionTransformer`` with the same backbone layout as ``config``."""
    return {
        "img_size": config.img_size,
        "patch_size": config.patch_size,
        "in_chans": config.in_chans,
        "embed_dim": config.embed_dim,
        "depth": config.depth,
        "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_ratio,
        "qkv_bias": config.qkv_bias,
        "num_classes": num_classes,
        "global_pool": "token",
        "class_token": True,
    }


def build_image_vit(config: ModelConfig, num_classes: int = 0) -> nn.Module:
    """A timm ``VisionTransformer`` whose weights load into an encoder of ``config`` (e.g. to pretrain frames)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**image_vit_kwargs(config, num_classes=num_classes))


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean``/``std`` of ``x / 255`` (RGB) that image weights expect, and their origin."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    checkpoint: str | None  # the weights: a timm name with its tag, or the source as given
    source: str  # where mean/std come from, in words (recorded in an export's preprocessing.json)
    from_checkpoint: bool  # False: the configured statistics were kept


def checkpoint_normalisation(
    source: str | Path | dict[str, torch.Tensor] | None,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Normalisation:
    """The statistics the image weights ``source`` (as :func:`read_image_vit_state` takes it) were
    pretrained with, from timm's ``pretrained_cfg`` without downloading weights: of a timm name (its
    default tag when it has none), of an ``hf-hub:`` id (its ``config.json``) or ``local-dir:`` folder, or
    of a timm ``config.json`` beside a local weights file. ``mean``/``std`` (the configured ones) when the
    source carries none: a state dict, a bare local file, no source at all."""
    configured = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    if source is None or isinstance(source, dict):
        what = "no image weights" if source is None else "a state dict has no pretrained_cfg"
        return Normalisation(*configured, None, f"the configured mean/std ({what})", False)
    name, path = str(source), Path(source)
    if path.exists():
        found = _local_pretrained_cfg(path.parent if path.is_file() else path)
        if found is None:
            note = (
                f"the configured mean/std: {name} has no timm pretrained_cfg (no tag, and no timm "
                "config.json beside it)"
            )
            return Normalisation(*configured, name, note, False)
        cfg, where = found
    elif name.startswith(("hf-hub:", "local-dir:")):
        cfg, where = _hub_pretrained_cfg(name)
    else:
        cfg, name = _timm_pretrained_cfg(name)
        default = "" if name == str(source) else f" (no tag in {str(source)!r}: timm's default tag)"
        where = f"timm's pretrained_cfg of {name}{default}"
    if "mean" not in cfg or "std" not in cfg:
        raise ValueError(f"{where}: the pretrained_cfg has no mean/std")
    stats = (tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"]))
    return Normalisation(*stats, name, where, True)


def _timm_pretrained_cfg(name: str) -> tuple[dict[str, Any], str]:
    """timm's registered pretrained_cfg of ``name`` and the name with its tag (no download)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as err:  # a tag timm does not know for this architecture
        raise RuntimeError(
            f"timm model '{name}': {err} Pass a known tag, or a local .pth or .safetensors file"
        ) from None
    if cfg is None:
        raise RuntimeError(
            f"'{name}' is neither a local file nor a timm model name with pretrained weights; "
            "pass a local .pth or .safetensors file instead"
        )
    return cfg.to_dict(), f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture


def _hub_pretrained_cfg(name: str) -> tuple[dict[str, Any], str]:
    """The pretrained_cfg of an ``hf-hub:`` id (its config.json is downloaded) or ``local-dir:`` folder."""
    kind, _, where = name.partition(":")
    if kind == "local-dir":
        found = _local_pretrained_cfg(Path(where))
        if found is None:
            raise FileNotFoundError(f"{name}: no timm config.json in {where}")
        return found
    from timm.models import load_model_config_from_hf

    try:
        cfg, _, _ = load_model_config_from_hf(where)
    except Exception as err:  # offline, unknown repo: say which and how to fix
        raise RuntimeError(
            f"could not read the config.json of '{name}' ({type(err).__name__}: {err}); pass a local "
            ".pth or .safetensors file (with the repo's config.json beside it) instead"
        ) from err
    return cfg, f"the pretrained_cfg of {name}"


def _local_pretrained_cfg(folder: Path) -> tuple[dict[str, Any], str] | None:
    """The pretrained_cfg of a timm ``config.json`` in ``folder`` (as timm writes it for the hub: an
    ``architecture`` name, and the cfg under ``pretrained_cfg`` or, in its older form, at the top level);
    None when there is no such file (other ``config.json`` files, e.g. a backbone's, are not timm's)."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), str):
        return None
    cfg = data.get("pretrained_cfg", data)
    tag = f"{data['architecture']}.{cfg['tag']}" if cfg.get("tag") else data["architecture"]
    return cfg, f"the timm pretrained_cfg in {path} ({tag})"


def read_image_vit_state(source: str | Path | dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Load a state dict from a dict, ``.pth``/``.pt``/``.bin``, ``.safetensors`` or a timm model id."""
    if isinstance(source, dict):
        state, name = source, "<state dict>"
    else:
        path = Path(source)
        name = str(source)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        elif path.exists():
            raise ValueError(f"{path}: unknown checkpoint type (expected .pth, .pt, .bin or .safetensors)")
        else:
            import timm

            try:
                state = timm.create_model(str(source), pretrained=True).state_dict()
            except Exception as err:  # offline, unknown name, missing weights: say which and how to fix
                raise RuntimeError(
                    f"could not get pretrained weights for timm model '{source}' ({type(err).__name__}: {err}); "
                    "pass a local .pth or .safetensors file instead"
                ) from err
    for wrapper in ("model", "state_dict"):  # common training-checkpoint wrappers
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state, name


@torch.no_grad()
def load_image_vit(
    model: SeFAREncoder | TimeSformer,
    source: str | Path | dict[str, torch.Tensor],
    strict: bool = True,
) -> LoadReport:
    """Copy an image ViT's weights into ``model`` (see the module docstring); returns a :class:`LoadReport`.

    Shape mismatches always raise. With ``strict`` (default), any spatial key missing from the source or
    any unexpected source key raises too, after nothing has been half-copied.
    """
    src, name = read_image_vit_state(source)
    backbone = model.backbone if isinstance(model, SeFAREncoder) else model
    prefix = "backbone." if isinstance(model, SeFAREncoder) else ""
    target = model.state_dict()
    report = LoadReport(source=name)
    updates: dict[str, torch.Tensor] = {}

    for key, value in src.items():
        if key.startswith(IGNORED_PREFIXES):
            report.ignored_keys.append(key)
            continue
        tkey = prefix + key
        if tkey not in target or any(m in tkey for m in VIDEO_ONLY_MARKERS):
            report.unexpected_keys.append(key)
            continue
        if key == "pos_embed" and value.shape != target[tkey].shape:
            old = value.shape
            value = _resample_pos_embed(value, backbone.grid_size, target[tkey].shape)
            report.resized[tkey] = f"{tuple(old)} -> {tuple(value.shape)} (grid {backbone.grid_size})"
        if value.shape != target[tkey].shape:
            raise ValueError(
                f"{name}: '{key}' has shape {tuple(value.shape)}, the encoder expects {tuple(target[tkey].shape)}"
            )
        updates[tkey] = value

    # TimeSformer init: temporal attention/norm start as copies of the spatial ones; proj_t is zeroed.
    for i in range(len(backbone.blocks)):
        for spatial, temporal in (("attn.", "attn_t."), ("norm1.", "norm_t.")):
            for tkey in [k for k in target if k.startswith(f"{prefix}blocks.{i}.{temporal}")]:
                skey = tkey.replace(f".{temporal}", f".{spatial}", 1)
                if skey in updates:
                    updates[tkey] = updates[skey]
                    report.initialised_from_spatial.append(tkey)

    report.loaded_keys = [k for k in updates if k not in report.initialised_from_spatial]
    report.missing_keys = [k for k in target if k not in report.loaded_keys]
    if strict and (report.unexpected_keys or report.unexpected_missing):
        raise ValueError(f"image ViT checkpoint does not match the encoder (strict):\n{report.summary()}")
    for key, value in updates.items():
        target[key].copy_(value.to(dtype=target[key].dtype))  # state_dict tensors share storage with params
    backbone.zero_temporal_projections()
    return report


def _resample_pos_embed(pos: torch.Tensor, grid: tuple[int, int], shape: torch.Size) -> torch.Tensor:
    """``[1, 1+N0, D]`` on a square N0 grid -> ``[1, 1+gh*gw, D]`` (CLS entry kept, patches bicubic)."""
    n0 = pos.shape[1] - 1
    side = round(n0**0.5)
    if side * side != n0 or pos.shape[-1] != shape[-1]:
        raise ValueError(
            f"cannot resample pos_embed {tuple(pos.shape)} to {tuple(shape)}: expected one CLS entry and a "
            "square patch grid of the same width"
        )
    return resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=1)
