"""The contract every video encoder of the MLLM fulfils, and the pieces the frame encoders share.

Shape notation: B batch, C = 3 channels, S frames, H/W pixels, F = B*S frames as one image batch,
gh/gw patch grid of a frame, g pooled grid side, N tokens per clip, D token width.

Frame encoders (:class:`FrameEncoder`: ``clip``, ``eva``, ``frameseq``) share one token layout, the
*frame sequence*: ``[B, S*g*g, D]``, frame-major, frames in time order; with ``frame_position
"sinusoidal"`` each frame's tokens also carry a fixed sinusoidal code of the frame index
(:func:`sinusoidal_frame_position`), so a frame's tokens say which frame they belong to.

    video [B, C, S, H, W] float, normalised with ``encoder.preprocess.mean/std``
        ──encode──► tokens [B, N, D]          (N = encoder.num_tokens, D = encoder.dim)

``encoder.preprocess`` says what the input must be (frames, views, size, normalisation), and
:meth:`Preprocess.eval_dataset` builds the SeFAR data path's deterministic eval pipeline for it
(segment centres, short side resized to ``image_size``, one centre crop): the one way to turn a file
into a tensor. :meth:`VideoEncoder.fingerprint` hashes everything that decides the tokens (weights,
token options, preprocessing); the feature cache is keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gym_qa.lists import ListEntry
from sefar_encoder.dataset import BadSamplePolicy, VideoClipDataset
from sefar_encoder.decoding import Backend
from sefar_encoder.model.image_vit import checkpoint_normalisation, read_image_vit_state
from sefar_encoder.transforms import AugmentConfig

# Bump when the way tokens are computed from the same weights changes, so old caches stop matching.
FINGERPRINT_VERSION = "mllm.video_encoder/1"

IMAGENET_MEAN = AugmentConfig.mean
IMAGENET_STD = AugmentConfig.std
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """The input an encoder expects: ``[B, 3, S, image_size, image_size]``, ``S = sum(views)``.

    ``views`` orders the frames as the sefar_encoder sampler does: view 0's frames, then view 1's, ...
    (a SeFAR encoder needs its training views; frame encoders use one view ``(S,)``, i.e. time order).
    Pixels are ``(x / 255 - mean) / std`` per RGB channel.
    """

    views: tuple[int, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(int(v) for v in self.views))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not self.views or min(self.views) < 1:
            raise ValueError(f"views must be positive frame counts, got {self.views}")
        if self.image_size < 1 or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"bad preprocessing {self}")

    @property
    def num_frames(self) -> int:
        return sum(self.views)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def augment_config(self) -> AugmentConfig:
        """The data path's eval settings: one temporal offset (segment centres), one centre crop."""
        return AugmentConfig(mean=self.mean, std=self.std, test_offsets=1, test_crops=1)

    def eval_dataset(
        self,
        entries: Sequence[ListEntry] | str | os.PathLike,
        backend: Backend = "decord",
        on_bad_sample: BadSamplePolicy = "error",
    ) -> VideoClipDataset:
        """Clips of a list as ``video [1, C, S, H, W]`` samples ready for :meth:`VideoEncoder.encode`."""
        return VideoClipDataset(
            entries,
            None,
            "eval",
            views=self.views,
            image_size=self.image_size,
            augment=self.augment_config(),
            backend=backend,
            on_bad_sample=on_bad_sample,
        )


class VideoEncoder(nn.Module):
    """Base class: subclasses implement ``forward(video) -> tokens [B, N, D]`` and set the attributes.

    Built frozen and in eval mode by :func:`mllm.encoders.build_video_encoder`. ``options`` are the
    builder arguments that change the tokens (layer, pooling, token layout...), never the weights'
    location: the same weights read from another path give the same fingerprint.
    """

    name: ClassVar[str] = ""

    def __init__(self, preprocess: Preprocess, dim: int, num_tokens: int, options: dict[str, Any]):
        super().__init__()
        self.preprocess = preprocess
        self.dim = int(dim)
        self.num_tokens = int(num_tokens)
        self.options = dict(options)
        json.dumps(self.options)  # fails early if an option cannot go into the fingerprint / cache index

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, C, S, H, W]`` (normalised as :attr:`preprocess` says) -> ``tokens [B, N, D]``.

        No autograd graph (the encoder is frozen in every MLLM stage); the input is moved to the
        encoder's device and dtype.
        """
        p = self.preprocess
        expected = (3, p.num_frames, p.image_size, p.image_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"{self.name} encoder expects video [B, {', '.join(map(str, expected))}] "
                f"(B, C, S, H, W), got {list(video.shape)}"
            )
        ref = next(self.parameters())
        tokens = self(video.to(device=ref.device, dtype=ref.dtype))
        if tokens.shape[1:] != (self.num_tokens, self.dim):
            raise RuntimeError(  # a subclass bug: the declared N, D are what projector and cache rely on
                f"{self.name} encoder returned {list(tokens.shape)}, declared [B, {self.num_tokens}, {self.dim}]"
            )
        return tokens

    def describe(self) -> dict[str, Any]:
        """Plain description written next to cached features."""
        return {
            "name": self.name,
            "options": self.options,
            "preprocess": self.preprocess.to_dict(),
            "num_tokens": self.num_tokens,
            "dim": self.dim,
        }

    def fingerprint(self) -> str:
        """sha256 over the description and every state tensor (name, dtype, shape, bytes).

        Reads all weights once (EVA-g/14: ~4 GB, a few seconds); casting the encoder to another dtype
        changes the fingerprint, as it changes the tokens.
        """
        digest = hashlib.sha256()
        digest.update(FINGERPRINT_VERSION.encode())
        digest.update(json.dumps(self.describe(), sort_keys=True).encode())
        for key, tensor in sorted(self.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{key}|{flat.dtype}|{list(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy())  # buffer protocol: no extra copy
        return digest.hexdigest()


def pool_patch_grid(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """``[F, D, gh, gw]`` -> ``[F, grid*grid, D]`` by adaptive average pooling (grid 1 = patch mean)."""
    gh, gw = patches.shape[-2:]
    if not 1 <= grid <= min(gh, gw):
        raise ValueError(f"pooling grid {grid} must be in [1, {min(gh, gw)}] for a {gh}x{gw} patch grid")
    pooled = F.adaptive_avg_pool2d(patches, grid)  # [F, D, g, g]
    return pooled.flatten(2).transpose(1, 2)  # [F, g*g, D], row-major over the grid


FRAME_POSITIONS: tuple[str, ...] = ("none", "sinusoidal")


def sinusoidal_frame_position(num_frames: int, dim: int) -> torch.Tensor:
    """``[S, D]`` fixed code of each frame index s (the Transformer's sinusoid over the frame index):
    ``[s, 2i] = sin(s / 10000^(2i/D))``, ``[s, 2i+1] = cos(s / 10000^(2i/D))``; values in [-1, 1].

    Frame 0 gets ``(0, 1, 0, 1, ...)``, so every frame, the first included, is marked.
    """
    if num_frames < 1 or dim < 1:
        raise ValueError(f"need num_frames >= 1 and dim >= 1, got {num_frames}, {dim}")
    position = torch.arange(num_frames, dtype=torch.float64)[:, None]  # [S, 1]
    frequency = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [ceil(D/2)]
    angle = position * frequency  # [S, ceil(D/2)]
    code = torch.zeros(num_frames, dim, dtype=torch.float64)
    code[:, 0::2] = torch.sin(angle)
    code[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return code.float()


class FrameEncoder(VideoEncoder):
    """An image encoder applied to every frame; its patch grid pooled to ``grid x grid`` tokens per frame.

    ``tokens [B, S*g*g, D]``, frame-major (frame 0's g*g tokens first), frames in time order (the
    frame sequence layout). ``frame_position="sinusoidal"`` adds :func:`sinusoidal_frame_position` to
    each frame's tokens. Why a fixed code rather than a learned one: the encoder is frozen and its
    tokens are cached, so a code added here is part of the cached features and needs no training; a
    learned frame embedding would have to live in the projector. The LLM's own positions already order
    the tokens; the code tells it which tokens belong to the same frame (g*g > 1) and which frame that is.
    Subclasses implement :meth:`frame_patches`.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        dim: int,
        grid: int,
        options: dict[str, Any],
        frame_position: str = "none",
    ):
        if len(preprocess.views) != 1:
            raise ValueError(
                f"a frame encoder takes its frames in time order (one view), got {preprocess.views}"
            )
        if frame_position not in FRAME_POSITIONS:
            raise ValueError(f"frame_position must be one of {FRAME_POSITIONS}, got {frame_position!r}")
        if frame_position != "none":
            # Recorded only when set: the descriptions (and so the feature-cache fingerprints) of encoders
            # built before the option existed stay the same.
            options = {**options, "frame_position": frame_position}
        super().__init__(preprocess, dim, preprocess.num_frames * grid * grid, options)
        self.grid = grid
        self.frame_position = frame_position
        code = (
            sinusoidal_frame_position(preprocess.num_frames, dim) if frame_position == "sinusoidal" else None
        )
        # Not persistent: a function of (S, D), not weights; it must not enter state_dict or the fingerprint
        # twice (the option already does).
        self.register_buffer("frame_code", code, persistent=False)

    def frame_patches(self, frames: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``frames [F, C, H, W]`` -> patch features ``[F, D, gh, gw]`` (class/prefix tokens dropped)."""
        raise NotImplementedError

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, s, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * s, c, h, w)  # [F, C, H, W], frame-major per clip
        tokens = pool_patch_grid(self.frame_patches(frames), self.grid)  # [F, g*g, D]
        tokens = tokens.reshape(b, s, tokens.shape[1], tokens.shape[2])  # [B, S, g*g, D]
        if self.frame_code is not None:
            tokens = tokens + self.frame_code[:, None, :].to(tokens.dtype)  # [S, 1, D] broadcast
        return tokens.reshape(b, -1, tokens.shape[3])  # [B, S*g*g, D]


def check_layer(layer: int, depth: int) -> int:
    """Block index of a LLaVA-style ``layer`` (hidden_states index: -1 = last block, -2 = penultimate)."""
    if not -depth <= layer <= -1:
        raise ValueError(f"layer must be in [-{depth}, -1] (counted from the last block), got {layer}")
    return depth + layer


StateFilter = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]


def load_weights_file(
    model: nn.Module, path: str | os.PathLike, state_filter: StateFilter | None = None
) -> None:
    """Load a local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` state dict (``weights_only``) into
    a timm model whose classifier was removed. The checkpoint's ``head.*`` (classifier / CLIP projection)
    is ignored; any other missing or unexpected key raises (a silently half-random encoder would poison
    every cached feature)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state, _ = read_image_vit_state(path)  # the toolkit's one reader of image checkpoints
    if state_filter is not None:
        state = state_filter(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model ({type(model).__name__}): missing keys {missing}, "
            f"unexpected keys {unexpected}; pass the architecture that wrote it (model_name / model_kwargs)"
        )


def timm_architecture(model: nn.Module) -> str | None:
    """timm's architecture name of ``model`` (``pretrained_cfg["architecture"]``), None for a plain module."""
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture")


def check_architecture(model: nn.Module, architecture: str | None, source: str | os.PathLike) -> None:
    """Fail when ``model`` (built from ``source``) is not the timm ``architecture`` a description recorded
    (None: nothing recorded, nothing to check)."""
    built = timm_architecture(model)
    if architecture is not None and built != architecture:
        raise ValueError(
            f"{source}: builds a {built or type(model).__name__!r} model, but the encoder description "
            f"records architecture {architecture!r}; pass the weights (or model_name) of that architecture"
        )


def timm_preprocess(
    model: nn.Module, num_frames: int, weights_file: str | os.PathLike | None = None
) -> Preprocess:
    """Input of a timm image model applied per frame: its patch embed's size, and the mean/std of its
    timm ``pretrained_cfg``: the one of the timm ``config.json`` beside a local ``weights_file`` when there
    is one (a hub repo's layout), else the one of the model name (and tag) it was built as."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = model.patch_embed.img_size
    if size[0] != size[1]:
        raise ValueError(f"only square frames are supported, the model takes {tuple(size)}")
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if weights_file is not None:
        norm = checkpoint_normalisation(Path(weights_file), mean, std)
        mean, std = norm.mean, norm.std
    return Preprocess(views=(num_frames,), image_size=int(size[0]), mean=mean, std=std)
