"""Cached frame tokens: the frozen per-frame stem run once per clip frame, and the views drawn from them.

With ``model.frame_blocks = k > 0`` the first k blocks of the encoder see one frame at a time
(:meth:`~sefar_encoder.model.encoder.SeFAREncoder.forward_frames`). Frozen, their output is a fixed
function of each frame, so a run can compute it once for every frame of every clip and train the rest
of the model on it: no decoding, no augmentation of pixels and no stem forward or backward per step.
On the CPU that buys several times the optimizer steps for the same wall time (docs/RESULTS.md).

    clip ──► all F frames, decoded once ──► eval crop + resize (and its mirror image) ──► normalise
         ──► frozen stem ──► entry [F, X, M, D] float32 (X = 2 with the mirror, else 1)
    entry ──► DualLevelSampler's S indices ──► TokenViews (flip, temporal perturbation) ──► [S, M, D]

What changes against training on pixels: the spatial augmentation is limited to the mirror image (no
scale jitter or random crop: every frame is the evaluation crop) and there is no channel dropout (a
pixel operation); TubeTokenMix mixes the stem's output tokens; everything temporal (frame choice,
Mod-Perturb reversal, warping, views) is unchanged. Evaluation reads the un-mirrored entries, so a
cached evaluation equals the uncached one up to float rounding (tests/test_frame_tokens.py).

An entry's key is the clip's absolute path, mtime and size plus the cache's fingerprint (stem weights,
frame size, normalisation, mirror), so another stem or another clip never reads a stale entry. Entries
are written to a temporary name and renamed, and read memory-mapped.

Shape notation: F frames in the clip, X mirror variants, M = 1 + N tokens per frame, D width,
S sampled frames (all views), C channels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gym_qa.atomic_files import atomic_replace
from sefar_encoder.decoding import Backend, DecodeError, open_video
from sefar_encoder.frame_cache import CachedClip, FrameCache, entry_file, open_entry
from sefar_encoder.transforms import AugmentConfig, AugParams, ClipTransform, CropBox


class FrameTokenCache:
    """Frozen-stem tokens of whole clips, one ``.npy`` per clip under ``cache_dir/<fingerprint>/``.

    ``cache = FrameTokenCache(dir, encoder, image_size, augment)``; ``cache.build(paths)`` fills the
    missing entries (main process, before the loaders start); ``cache.open(path)`` then serves them with
    the interface of :func:`~sefar_encoder.decoding.open_video` (tokens instead of pixels).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        encoder: torch.nn.Module,
        image_size: int,
        augment: AugmentConfig,
        frame_cache: FrameCache | None = None,
        backend: Backend = "decord",
        batch_frames: int = 256,
    ):
        if augment.test_crops != 1:
            raise ValueError("cached frame tokens hold one crop per frame: set data.augment.test_crops=1")
        self.encoder = encoder
        self.image_size = int(image_size)
        self.mirror = bool(augment.flip)
        # the stem's input is the evaluation crop (the un-jittered labeled view), normalised as in training
        self.augment = dataclasses.replace(augment, temporal_perturb="none", channel_dropout=0.0)
        self.frame_cache = frame_cache
        self.backend = backend
        self.batch_frames = batch_frames
        backbone = encoder.backbone
        self.tokens_shape = (1 + backbone.num_patches, backbone.embed_dim)  # (M, D)
        self.fingerprint = self._fingerprint()
        self.cache_dir = Path(cache_dir) / self.fingerprint

    def _fingerprint(self) -> str:
        h = hashlib.sha1()
        h.update(repr((self.image_size, self.mirror, self.augment.mean, self.augment.std)).encode())
        h.update(repr(self.augment.eval_short_side).encode())
        for name, p in self.encoder.backbone.frame_stem_parameters():
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- entries ------------------------------------------------------------------------------
    def entry_path(self, path: str | os.PathLike) -> Path:
        """The entry of a clip; raises :class:`DecodeError` when the clip does not exist."""
        return entry_file(self.cache_dir, path)  # the fingerprint is in cache_dir

    def _frames(self, path: Path) -> np.ndarray:
        """Every frame of the clip, ``[F, H, W, 3]`` uint8 (one decode, or the frame cache's entry)."""
        opened = (
            self.frame_cache.open(path, self.backend) if self.frame_cache else open_video(path, self.backend)
        )
        with opened as clip:
            return clip.get(np.arange(clip.num_frames))

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """``[F, H, W, 3]`` uint8 -> ``[F, X, M, D]`` float32 stem tokens (X = 2: second is the mirror)."""
        num = frames.shape[0]
        pixels = ClipTransform((num,), self.image_size, self.augment)
        (box,) = pixels.eval_boxes(frames.shape[1], frames.shape[2])
        variants = [box, dataclasses.replace(box, flip=True)] if self.mirror else [box]
        video = torch.stack([pixels.apply(frames, AugParams((b,))) for b in variants])  # [X, C, F, h, w]
        x = video.transpose(1, 2).flatten(0, 1)  # [X*F, C, h, w]: every frame alone
        device = next(self.encoder.parameters()).device
        out = []
        for chunk in x.split(self.batch_frames):
            out.append(self.encoder.forward_frames(chunk.unsqueeze(2).to(device)).squeeze(1).float().cpu())
        tokens = torch.cat(out).unflatten(0, (len(variants), num))  # [X, F, M, D]
        return tokens.transpose(0, 1).contiguous().numpy()

    def build(self, paths: Iterable[str | os.PathLike], progress: bool = True) -> int:
        """Write the entries that are missing; returns how many were written."""
        todo = []
        for p in dict.fromkeys(Path(p) for p in paths):
            entry = self.entry_path(p)
            if not entry.exists():
                todo.append((p, entry))
        if not todo:
            return 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            for path, entry in tqdm(todo, desc="frame tokens", disable=not progress, leave=False):
                tokens = self.encode_frames(self._frames(path))
                with atomic_replace(entry) as tmp, open(tmp, "wb") as f:
                    np.save(f, tokens)
        finally:
            self.encoder.train(was_training)
        return len(todo)

    def open(self, path: str | os.PathLike, backend: Backend | None = None) -> CachedClip:
        """The clip's cached tokens, ``get(indices) -> [n, X, M, D]`` float32 (``backend`` is accepted for
        the decoders' signature; unused)."""
        entry = self.entry_path(path)
        if not entry.exists():
            raise DecodeError(Path(path), f"no frame-token entry {entry.name}: build the cache first")
        return open_entry(path, entry)

    def __getstate__(self) -> dict:
        # DataLoader workers only open entries: they never need the encoder (nor pickle its weights)
        return {**self.__dict__, "encoder": None}


class TokenViews(ClipTransform):
    """:class:`ClipTransform`'s labeled / weak / strong / eval pipelines on cached frame tokens.

    Input of one sample: ``[S, X, M, D]`` (the sampled frames' entries); output ``[S, M, D]`` (eval:
    ``[n_offsets, S, M, D]``). The random draws are those of the pixel pipelines that tokens allow: a
    mirror per view (shared by the views of the labeled and weak pipelines) and the strong pipeline's
    temporal perturbation; no crop, no channel dropout.
    """

    def __init__(
        self, views: tuple[int, ...], tokens_shape: tuple[int, int], cfg: AugmentConfig | None = None
    ):
        cfg = dataclasses.replace(cfg or AugmentConfig(), channel_dropout=0.0)
        if cfg.test_crops != 1:
            raise ValueError("cached frame tokens hold one crop per frame: set data.augment.test_crops=1")
        super().__init__(views, image_size=1, cfg=cfg)
        self.tokens_shape = tuple(tokens_shape)  # (M, D)

    def _random_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        return CropBox(0, 0, 0, flip=bool(self.cfg.flip and rng.random() < 0.5))

    def output_shape(self) -> tuple[int, ...]:
        return (self.num_frames, *self.tokens_shape)

    def apply(
        self, frames: np.ndarray | torch.Tensor, params: AugParams, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[S, X, M, D]`` -> ``[S, M, D]``: time order, then each view's mirror variant."""
        tokens = torch.as_tensor(np.asarray(frames))
        if params.time_order is not None:
            tokens = tokens[torch.from_numpy(params.time_order)]
        if tokens.shape[0] != self.num_frames:
            raise ValueError(
                f"expected {self.num_frames} frames for views {self.views}, got {tokens.shape[0]}"
            )
        if out is None:
            out = torch.empty(self.output_shape(), dtype=torch.float32)
        for s, n, box in zip(self.starts.tolist(), self.views, params.boxes):
            variant = int(box.flip) if tokens.shape[1] > 1 else 0
            out[s : s + n] = tokens[s : s + n, variant]
        return out

    def eval(self, frames_per_offset: list[np.ndarray], out: torch.Tensor | None = None) -> torch.Tensor:
        """One ``[S, X, M, D]`` array per temporal offset -> ``[n_offsets, S, M, D]`` (un-mirrored)."""
        if out is None:
            out = torch.empty((len(frames_per_offset), *self.output_shape()), dtype=torch.float32)
        plain = AugParams((CropBox(0, 0, 0),) * len(self.views))
        for i, frames in enumerate(frames_per_offset):
            self.apply(frames, plain, out[i])
        return out
