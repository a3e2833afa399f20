"""SeFAR encoder tokens for the MLLM: a :class:`~sefar_encoder.model.SeFAREncoder` checkpoint directory.

Shape notation: B batch, C channels, S = sum(views) frames, V views, N patch tokens per frame, D width.

Token layouts (``token_layout``; default: the checkpoint's ``ModelConfig.token_layout``):

- ``view_cls``:   the V per-view CLS features, then the fused feature h -> ``[B, V+1, D]``
- ``frame_mean``: per frame the mean of its normalised patch tokens -> ``[B, S, D]``, re-ordered from the
  encoder's view order into time order (token i = segment i of the clip), as the frame encoders give.

The input keeps the encoder's training layout: frames grouped by view (``preprocess.views`` = the
checkpoint's views), normalised with the mean/std the export records (``preprocessing.json``) unless given.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.sampling import assign_segments

from .base import Preprocess, VideoEncoder


class SeFARVideoEncoder(VideoEncoder):
    """A SeFAR encoder's MLLM tokens (see the module docstring).

    The model itself is left as it is (its config included), so the same loaded encoder can also serve
    as the demo's classifier.
    """

    name = "sefar"

    def __init__(
        self,
        model: SeFAREncoder,
        token_layout: Literal["view_cls", "frame_mean"] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ):
        config = model.config
        # replace() re-runs ModelConfig's checks (view_cls needs fusion_dim == embed_dim).
        layout = dataclasses.replace(config, token_layout=token_layout or config.token_layout).token_layout
        views = config.views
        num_tokens = len(views) + 1 if layout == "view_cls" else sum(views)
        recorded = model.preprocessing
        preprocess = Preprocess(
            views=views, image_size=config.img_size, mean=mean or recorded.mean, std=std or recorded.std
        )
        super().__init__(preprocess, config.embed_dim, num_tokens, {"token_layout": layout})
        self.model = model
        self.token_layout = layout
        # Flat (view-order) position of each segment: gathering with it puts frame tokens in time order.
        flat_segments = np.concatenate([np.asarray(s) for s in assign_segments(views)])
        self.register_buffer(
            "time_order", torch.from_numpy(np.argsort(flat_segments)).long(), persistent=False
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.token_layout == self.model.config.token_layout:
            tokens = self.model(video).tokens  # view_cls [B, V+1, D] | frame_mean [B, S, D] in view order
        elif self.token_layout == "view_cls":  # the model's own view_cls tokens, its config naming frame_mean
            view_features = self.model.forward_features(video)  # [B, V, D]
            h = self.model.forward_head(view_features, pre_logits=True)  # [B, D]
            tokens = torch.cat([view_features, h.unsqueeze(1)], dim=1)  # [B, V+1, D]
        else:  # the model's own frame_mean tokens, its config naming view_cls
            _, patches = self.model.forward_features(video, return_patch_tokens=True)  # [B, S, N, D]
            tokens = patches.mean(dim=2)  # [B, S, D] in view order
        if self.token_layout == "frame_mean":
            tokens = tokens[:, self.time_order]  # [B, S, D] in time order
        return tokens


def build_sefar(
    path_or_id: str | os.PathLike,
    token_layout: Literal["view_cls", "frame_mean"] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> SeFARVideoEncoder:
    """Load a ``save_pretrained`` directory (or a hub repo holding one: config.json + model.safetensors).

    ``mean``/``std``: the normalisation of the input (default: the one the export records, i.e. the one
    it was trained with).
    """
    directory = Path(path_or_id)
    if not directory.is_dir():
        directory = _download(str(path_or_id))
    return SeFARVideoEncoder(SeFAREncoder.from_pretrained(directory), token_layout, mean, std)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # offline, unknown repo, not a repo id at all: say which and how to fix
        raise FileNotFoundError(
            f"{repo_id!r} is not a SeFAR checkpoint directory and could not be fetched as a hub repo "
            f"({type(err).__name__}: {err})"
        ) from err
