"""The SeFAR encoder: TimeSformer backbone + fusion head, with a timm-like contract and export.

Shape notation: B batch, C channels, S = sum of view frames, H/W pixels, V views, N patch tokens per
frame, D backbone width, Dh fusion width, K classes.

    video [B, C, S, H, W] ──forward_features──► f [B, V, D] ──forward_head──► logits [B, K]
                                                            (pre_logits=True: h [B, Dh])
    forward(video, mix) -> EncoderOutput(logits, h, view_features, tokens)

``tokens`` is what the MLLM consumes (docs/DESIGN.md §Tokens for the MLLM), chosen by
``ModelConfig.token_layout``: ``"view_cls"`` = the V view features followed by the fused feature ``h`` ->
``[B, V+1, D]`` (needs ``fusion_dim == embed_dim``); ``"frame_mean"`` = per frame the mean of its
normalised patch tokens -> ``[B, S, D]`` (frames in view order).

A checkpoint directory (``save_pretrained``) describes itself: ``config.json`` (this module's
:class:`ModelConfig`), ``model.safetensors``, ``class_names.json``, ``preprocessing.json``
(:class:`EncoderPreprocessing`: how a clip becomes the input, and the data it was trained on) and
optionally ``hierarchy.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..runtime.config import ConfigError, load_config, to_dict
from ..transforms import AugmentConfig
from .fusion_head import FusionHead
from .timesformer import TimeSformer
from .token_mix import MixSpec

CHECKPOINT_FORMAT = "sefar_encoder/1"
PREPROCESSING_FILE = "preprocessing.json"


@dataclass
class ModelConfig:
    """Architecture of a SeFAR encoder (defaults: ViT-B/16 at 224 px, views (2, 2, 4), FineGym99)."""

    img_size: int = field(default=224, metadata={"help": "input frame size in pixels (square)"})
    patch_size: int = field(default=16, metadata={"help": "patch size in pixels"})
    in_chans: int = field(default=3, metadata={"help": "input channels"})
    embed_dim: int = field(default=768, metadata={"help": "backbone width D"})
    depth: int = field(default=12, metadata={"help": "number of divided space-time blocks"})
    num_heads: int = field(default=12, metadata={"help": "attention heads (temporal and spatial)"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "MLP hidden width / D"})
    qkv_bias: bool = field(default=True, metadata={"help": "bias in the qkv projections (timm ViT: true)"})
    drop_path_rate: float = field(default=0.1, metadata={"help": "stochastic depth rate of the last block"})
    views: tuple[int, ...] = field(
        default=(2, 2, 4),
        metadata={"help": "frames per view, in the order views are concatenated along time"},
    )
    frame_blocks: int = field(
        default=0,
        metadata={
            "help": "leading blocks without temporal attention (a per-frame stem; its output can be cached: "
            "train.frame_token_cache)"
        },
    )
    num_classes: int = field(default=99, metadata={"help": "number of classes K"})
    head_dropout: float = field(default=0.5, metadata={"help": "dropout before the classifier W_c"})
    fusion_dim: int | None = field(default=None, metadata={"help": "fusion width Dh (null: embed_dim)"})
    token_layout: Literal["view_cls", "frame_mean"] = field(
        default="view_cls",
        metadata={"help": "MLLM tokens: view_cls = V view features + h; frame_mean = per-frame patch mean"},
    )

    def __post_init__(self) -> None:
        self.views = tuple(int(v) for v in self.views)
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.token_layout == "view_cls" and self.fusion_dim not in (None, self.embed_dim):
            raise ValueError(
                f"token_layout 'view_cls' concatenates h with the view features, so fusion_dim "
                f"({self.fusion_dim}) must equal embed_dim ({self.embed_dim})"
            )

    @property
    def num_frames(self) -> int:
        return sum(self.views)

    @property
    def resolved_fusion_dim(self) -> int:
        return self.fusion_dim or self.embed_dim


@dataclass(frozen=True)
class EncoderPreprocessing:
    """How a clip becomes the encoder's input, and what the encoder was trained on (provenance): the
    ``preprocessing.json`` of an export.

    Input ``[B, 3, sum(views), image_size, image_size]``: segment centres of each view (views in order),
    short side resized to ``image_size``, centre crop, pixels ``(x / 255 - mean) / std`` per RGB channel;
    training takes mean/std from the image weights it starts from (their timm ``pretrained_cfg``, see
    :func:`~sefar_encoder.model.image_vit.checkpoint_normalisation`) and ``normalisation`` says which.
    ``image_size`` and ``views`` repeat the model config's ``img_size`` and ``views`` so that the file alone
    says how to feed the encoder; loading checks that they agree.
    """

    image_size: int = field(default=224, metadata={"help": "input frame size in pixels (square)"})
    views: tuple[int, ...] = field(default=(2, 2, 4), metadata={"help": "frames per view, in input order"})
    mean: tuple[float, float, float] = field(
        default=AugmentConfig.mean, metadata={"help": "per-channel mean of x / 255 (RGB)"}
    )
    std: tuple[float, float, float] = field(
        default=AugmentConfig.std, metadata={"help": "per-channel std of x / 255 (RGB)"}
    )
    data_root: str | None = field(
        default=None, metadata={"help": "provenance: the data set folder it was trained on (null: unknown)"}
    )
    label_rate: int | None = field(
        default=None, metadata={"help": "provenance: the labeled percentage it was trained with"}
    )
    init_checkpoint: str | None = field(
        default=None,
        metadata={"help": "provenance: the image weights training started from, timm names with their tag"},
    )
    normalisation: str | None = field(
        default=None,
        metadata={"help": "provenance: where mean/std come from (the image weights' timm pretrained_cfg)"},
    )

    @classmethod
    def for_config(cls, config: ModelConfig, **fields: Any) -> EncoderPreprocessing:
        """The preprocessing of an encoder of ``config`` (its size and views), with ``fields`` (mean, std,
        provenance) given; ImageNet's mean/std and unknown provenance otherwise."""
        return cls(image_size=config.img_size, views=config.views, **fields)

    @classmethod
    def read(cls, directory: str | Path) -> EncoderPreprocessing:
        """The ``preprocessing.json`` of a :meth:`SeFAREncoder.save_pretrained` directory, checked against
        its ``config.json``; no weights are read.

        An export written before ``preprocessing.json`` existed gets :meth:`for_config`: ImageNet's
        mean/std (what every config trained with then) and unknown provenance.
        """
        directory = Path(directory)
        config = load_config(ModelConfig, directory / "config.json")
        path = directory / PREPROCESSING_FILE
        if not path.is_file():
            return cls.for_config(config)
        preprocessing = load_config(cls, path)  # JSON is YAML: validated, typed
        if (preprocessing.image_size, preprocessing.views) != (config.img_size, config.views):
            raise ConfigError(
                f"{path}: image_size {preprocessing.image_size}, views {preprocessing.views} differ from "
                f"config.json's img_size {config.img_size}, views {config.views}"
            )
        return preprocessing


@dataclass
class EncoderOutput:
    """``logits [B, K]``, fused ``h [B, Dh]``, ``view_features [B, V, D]``, MLLM ``tokens [B, L, D]``."""

    logits: torch.Tensor
    h: torch.Tensor
    view_features: torch.Tensor
    tokens: torch.Tensor


class SeFAREncoder(nn.Module):
    """TimeSformer shared by all views + :class:`FusionHead`; carries class names and a hierarchy blob."""

    def __init__(
        self,
        config: ModelConfig,
        class_names: list[str] | None = None,
        hierarchy: dict[str, Any] | None = None,
        preprocessing: EncoderPreprocessing | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != config.num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={config.num_classes}")
        preprocessing = preprocessing or EncoderPreprocessing.for_config(config)
        if (preprocessing.image_size, preprocessing.views) != (config.img_size, config.views):
            raise ValueError(
                f"preprocessing for {preprocessing.image_size} px, views {preprocessing.views}; the model "
                f"takes {config.img_size} px, views {config.views}"
            )
        self.config = config
        self.class_names = list(class_names) if class_names is not None else None
        self.hierarchy = hierarchy
        self.preprocessing = preprocessing
        self.backbone = TimeSformer(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            drop_path_rate=config.drop_path_rate,
            views=config.views,
            frame_blocks=config.frame_blocks,
        )
        self.fusion_head = FusionHead(
            in_dim=config.embed_dim,
            fusion_dim=config.resolved_fusion_dim,
            num_views=len(config.views),
            num_classes=config.num_classes,
            dropout=config.head_dropout,
        )

    # ---- timm-like contract -------------------------------------------------------------------
    def forward_features(
        self, video: torch.Tensor, mix: MixSpec | None = None, return_patch_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``video [B, C, S, H, W]`` (or its frame tokens ``[B, S, M, D]``, see :meth:`forward_frames`) ->
        per-view features ``[B, V, D]``.

        With ``return_patch_tokens`` also the normalised patch tokens ``[B, S, N, D]``.
        """
        tokens = self.backbone(video, mix=mix)  # [B, S, 1+N, D]
        f = self.backbone.pool_views(tokens)  # [B, V, D]
        if return_patch_tokens:
            return f, tokens[:, :, 1:]
        return f

    def forward_frames(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, C, S, H, W]`` -> frame tokens ``[B, S, M, D]`` of the per-frame stem
        (``config.frame_blocks`` blocks); :meth:`forward` accepts them in place of the video."""
        return self.backbone.forward_frames(video)

    def freeze_frame_stem(self) -> list[str]:
        """Freeze the parameters of :meth:`forward_frames` (so its outputs can be cached); their names."""
        names = []
        for name, p in self.backbone.frame_stem_parameters():
            p.requires_grad_(False)
            names.append(f"backbone.{name}")
        return names

    def forward_head(self, view_features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[B, V, D]`` -> logits ``[B, K]``, or the fused feature ``h [B, Dh]`` with ``pre_logits``."""
        h = self.fusion_head.fuse(view_features)
        return h if pre_logits else self.fusion_head.classify(h)

    def forward(self, video: torch.Tensor, mix: MixSpec | None = None) -> EncoderOutput:
        f, patches = self.forward_features(video, mix=mix, return_patch_tokens=True)
        h = self.fusion_head.fuse(f)
        logits = self.fusion_head.classify(h)
        if self.config.token_layout == "view_cls":
            tokens = torch.cat([f, h.unsqueeze(1)], dim=1)  # [B, V+1, D]
        else:
            tokens = patches.mean(dim=2)  # [B, S, D]
        return EncoderOutput(logits=logits, h=h, view_features=f, tokens=tokens)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names without weight decay: embeddings, norms and biases (docs/DESIGN.md
        §Optimiser)."""
        names = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        return names | {n for n, p in self.named_parameters() if p.ndim <= 1}

    @property
    def num_layers(self) -> int:
        """Transformer blocks of the backbone (the depth scale of :meth:`layer_id`)."""
        return len(self.backbone.blocks)

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: patch/position embeddings and the class token 0,
        backbone block i i + 1, everything after the blocks (final norm, fusion head) L + 1 — and the
        temporal parameters (time embeddings; each block's ``norm_t``, ``attn_t``, ``proj_t``) L + 1 too.

        The decay keeps pretrained weights close to the image checkpoint; no image checkpoint has the
        temporal parameters (``attn_t``/``norm_t`` at most start as copies of the spatial ones,
        ``time_embeds`` and ``proj_t`` at zero, so the model starts blind to frame order), so they learn at
        the head's rate: at the embeddings' and their block's depth they would get 24 % (time embeddings)
        to 32 % (block 0) of it with decay 0.75 over 4 blocks.
        """
        temporal = (".norm_t.", ".attn_t.", ".proj_t.")
        if name.startswith("backbone.time_embeds.") or any(m in name for m in temporal):
            return self.num_layers + 1
        if name.startswith("backbone.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith(("backbone.patch_embed", "backbone.pos_embed", "backbone.cls_token")):
            return 0
        return self.num_layers + 1

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` of one frame — what :meth:`TubeMix.sample` needs."""
        return self.backbone.grid_size

    def set_head_dropout(self, enabled: bool) -> SeFAREncoder:
        """Put only the fusion-head dropout in train (``enabled``) or eval mode; everything else untouched.

        The EMA teacher runs in eval mode except this dropout when K full passes are wanted (the
        official Adaptive Regulation); the one-pass path (``fusion_head.sample_logits``) does not need it.
        """
        self.fusion_head.dropout.train(enabled)
        return self

    # ---- export -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``class_names.json``, ``preprocessing.json``
        (+ ``hierarchy.json``).

        Atomic: everything is written to a temporary sibling directory that then replaces ``directory``.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(
                state,
                str(tmp / "model.safetensors"),
                metadata={"format": "pt", "checkpoint": CHECKPOINT_FORMAT},
            )
            names = self.class_names or [str(i) for i in range(self.config.num_classes)]
            (tmp / "class_names.json").write_text(json.dumps(names, indent=2, ensure_ascii=False) + "\n")
            (tmp / PREPROCESSING_FILE).write_text(json.dumps(to_dict(self.preprocessing), indent=2) + "\n")
            if self.hierarchy is not None:
                (tmp / "hierarchy.json").write_text(
                    json.dumps(self.hierarchy, indent=2, ensure_ascii=False) + "\n"
                )
            if directory.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
                old.rmdir()
                directory.rename(old)  # never leave a half-written checkpoint under the final name
                tmp.rename(directory)
                shutil.rmtree(old)
            else:
                tmp.rename(directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> SeFAREncoder:
        """Rebuild an encoder written by :meth:`save_pretrained` (strict: every key must match); its
        ``preprocessing.json`` becomes :attr:`preprocessing` (see :meth:`EncoderPreprocessing.read`)."""
        directory = Path(directory)
        config = load_config(ModelConfig, directory / "config.json")  # JSON is YAML: validated, typed
        names_file = directory / "class_names.json"
        class_names = json.loads(names_file.read_text()) if names_file.is_file() else None
        hierarchy_file = directory / "hierarchy.json"
        hierarchy = json.loads(hierarchy_file.read_text()) if hierarchy_file.is_file() else None
        preprocessing = EncoderPreprocessing.read(directory)
        model = cls(config, class_names=class_names, hierarchy=hierarchy, preprocessing=preprocessing)
        device = torch.device(map_location)
        # safetensors takes "cpu", "cuda", "cuda:1", ... but rejects "cpu:0": name CPU without an index.
        state = load_file(
            str(directory / "model.safetensors"), device="cpu" if device.type == "cpu" else str(device)
        )
        model.load_state_dict(state, strict=True)
        return model.to(device)
