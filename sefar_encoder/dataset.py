"""The SeFAR dataset: one clip of a list file -> one sample dict, decoded once (docs/DESIGN.md §Dataset
and loader).

    VideoClipDataset[(index, seed)] ──► open clip (decoder, frame cache or frame-token cache), num_frames
        ──► DualLevelSampler picks S indices ──► ONE decode ──► ClipTransform ──► sample dict

Sample dicts by ``mode`` (S = sum(views) frames, C = 3; clips are float32 normalised, or uint8 pixels
with ``normalize=False``):

- ``labeled``:   ``video [C, S, H, W]`` float, ``label`` int, ``index`` int, ``frame_indices [S]``
- ``unlabeled``: ``weak [C, S, H, W]`` (teacher), ``strong [C, S, H, W]`` (student), both from the same
  decoded frames; ``label`` (kept for analysis only, never for training), ``index``, ``frame_indices``
- ``eval``:      ``video [n_test, C, S, H, W]`` (temporal offsets × spatial crops), ``label``, ``index``,
  ``frame_indices [n_offsets, S]``

:func:`sefar_encoder.collate.collate_clips` stacks them into batches; :mod:`sefar_encoder.loader` turns
datasets into loaders.

Bad input (docs/DESIGN.md §Dataset and loader): a list line that is malformed fails when the list is read
(``gym_qa.lists`` names file and line). A clip that cannot be decoded raises
:class:`~sefar_encoder.decoding.DecodeError` with ``on_bad_sample="error"`` (call
:meth:`VideoClipDataset.validate` before training to get the full list of bad files at once, see
:mod:`sefar_encoder.clip_checks`), or is skipped and counted with ``"skip"``: the sample is then a
:class:`SkippedSample` and a batch holds fewer samples; no other clip is ever substituted.

Readers are opened inside ``__getitem__`` / ``__getitems__`` (so inside DataLoader workers) and closed
after each sample; a dataset object holds only paths and settings and pickles cheaply into workers.
A DataLoader batch goes through ``__getitems__``: decode every sample, then augment every sample straight
into one batch buffer per key, which :func:`~sefar_encoder.collate.collate_clips` passes on without
stacking.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from gym_qa.lists import ListEntry, read_list
from sefar_encoder.clip_checks import BadClip, BadClipsError, find_bad_clips
from sefar_encoder.decoding import Backend, DecodeError, DecoderFallbackWarning, open_video
from sefar_encoder.frame_cache import FrameCache
from sefar_encoder.frame_tokens import FrameTokenCache, TokenViews
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import AugmentConfig, ClipTransform, scaled_jitter_range

Mode = Literal["labeled", "unlabeled", "eval"]
BadSamplePolicy = Literal["error", "skip"]
SampleKey = int | tuple[int, Sequence[int]]


@dataclass(frozen=True)
class SkippedSample:
    """Stands in for an undecodable clip under ``on_bad_sample="skip"``; dropped by
    :func:`~sefar_encoder.collate.collate_clips`."""

    index: int
    path: str
    reason: str


@dataclass
class Decoded:
    """A sample between decoding and augmentation: ``frames [n*S, H, W, 3]`` uint8 for
    ``frame_indices [n, S]`` (n = 1, or the number of temporal offsets in eval) of a clip of
    ``num_frames`` frames, and its ``rng``."""

    index: int
    label: int
    num_frames: int
    frame_indices: np.ndarray
    frames: np.ndarray
    rng: np.random.Generator | None  # None in eval mode, which draws nothing
    fallback: str | None = None  # decord's reason when PyAV decoded the clip instead


class VideoClipDataset(Dataset):
    """Clips of a list file as sample dicts (see module docstring); keys are ``index`` or
    ``(index, seed_words)`` where ``seed_words`` seeds this sample's frame choice and augmentation
    (the :class:`~sefar_encoder.batch_sampler.InfiniteBatchSampler` provides them, making runs
    reproducible and resumable).

    ``entries``: parsed list entries or a list file path. ``normalize=False`` leaves clips as uint8
    pixels (``[C, S, H, W]``, all augmentation applied) for :func:`~sefar_encoder.collate.finish_batch`
    to normalise after the transfer from workers. ``cache_dir`` enables the :class:`FrameCache`
    (``cache_short_side`` 0 = top of the jitter range). ``token_cache`` (a built :class:`FrameTokenCache`)
    serves frozen-stem tokens instead of pixels: every clip tensor then has ``[S, M, D]`` in place of
    ``[C, S, H, W]``.
    """

    def __init__(
        self,
        entries: Sequence[ListEntry] | str | os.PathLike,
        num_classes: int | None,
        mode: Mode,
        views: tuple[int, ...] = (2, 2, 4),
        image_size: int = 224,
        augment: AugmentConfig | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_short_side: int = 0,
        backend: Backend = "decord",
        on_bad_sample: BadSamplePolicy = "error",
        normalize: bool = True,
        token_cache: FrameTokenCache | None = None,
    ):
        if mode not in ("labeled", "unlabeled", "eval"):
            raise ValueError(f"mode must be labeled, unlabeled or eval, got {mode!r}")
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if isinstance(entries, (str, os.PathLike)):
            self.source = str(entries)
            entries = read_list(entries, num_classes)  # ListFileError names file and line
        else:
            self.source = "<entries>"
        self.entries = list(entries)
        self.num_classes = num_classes
        self.mode = mode
        self.backend = backend
        self.on_bad_sample = on_bad_sample
        self.augment = augment or AugmentConfig()
        self.sampler = DualLevelSampler(views)
        self.token_cache = token_cache
        if token_cache is not None:
            self.normalize = True  # tokens are float; there are no pixels to normalise later
            self.transform = TokenViews(views, token_cache.tokens_shape, self.augment)
        else:
            self.normalize = normalize
            self.transform = ClipTransform(views, image_size, self.augment, normalize=normalize)
        self.cache: FrameCache | None = None
        if cache_dir is not None:
            # Default cache size keeps every pixel the largest jitter scale can use.
            short = cache_short_side or scaled_jitter_range(image_size, self.augment)[1]
            self.cache = FrameCache(cache_dir, short)
        self.skipped: dict[int, str] = {}  # this process only; loaders count across workers
        self.known_bad: dict[int, str] = {}  # filled by validate() under "skip"
        self.fallbacks: dict[str, str] = {}  # filled by validate(): path -> decord's reason

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_skipped(self) -> int:
        """Samples skipped in this process (with workers, use
        :attr:`~sefar_encoder.loader.SemiSupervisedLoader.num_skipped`)."""
        return len(self.skipped)

    def _open(self, path: Path):
        if self.token_cache is not None:
            return self.token_cache.open(path)
        return (
            self.cache.open(path, self.backend) if self.cache is not None else open_video(path, self.backend)
        )

    def decode(self, key: SampleKey) -> Decoded | SkippedSample:
        """Phase 1 of a sample: choose its frames and decode them (once)."""
        index, seed = key if isinstance(key, tuple) else (int(key), None)
        entry = self.entries[index]
        if index in self.known_bad:
            self.skipped[index] = self.known_bad[index]
            return SkippedSample(index, str(entry.path), self.known_bad[index])
        rng = None
        if self.mode != "eval":  # eval draws nothing: it must not consume the caller's random stream
            # Without a seed from the sampler, draw one from torch's RNG, which DataLoader seeds per worker.
            rng = np.random.default_rng(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        try:
            with self._open(entry.path) as clip:
                if self.mode == "eval":
                    samples = self.sampler.eval(clip.num_frames, self.augment.test_offsets)
                    flat = np.stack([s.flat for s in samples])  # [n_offsets, S]
                else:
                    flat = self.sampler.train(clip.num_frames, rng).flat[None]  # [1, S]
                frames = clip.get(flat.reshape(-1))  # the one decode of this sample: [n*S, H, W, 3]
                fallback = getattr(clip, "fallback", None)  # frame-cache entries have none
        except DecodeError as err:
            if self.on_bad_sample == "error":
                raise
            self.skipped[index] = err.reason or str(err)
            return SkippedSample(index, str(entry.path), self.skipped[index])
        return Decoded(index, entry.label, clip.num_frames, flat, frames, rng, fallback)

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors of one sample dict, by key (frame_indices excluded)."""
        one = self.transform.output_shape()  # (C, S, h, w)
        if self.mode == "labeled":
            return {"video": one}
        if self.mode == "unlabeled":
            return {"weak": one, "strong": one}
        return {"video": (self.transform.num_test_views(), *one)}

    def augment_decoded(
        self, decoded: Decoded | SkippedSample, out: dict[str, torch.Tensor] | None = None
    ) -> dict[str, Any] | SkippedSample:
        """Phase 2 of a sample: the pipeline of this dataset's mode on the decoded frames.

        ``out`` maps tensor keys to preallocated rows (see :meth:`output_shapes`) to write into.
        """
        if isinstance(decoded, SkippedSample):
            return decoded
        out = out or {}
        item: dict[str, Any] = {"label": decoded.label, "index": decoded.index}
        if decoded.fallback is not None:  # moved to the batch's "fallbacks" by collate_clips
            item["fallback"] = (str(self.entries[decoded.index].path), decoded.fallback)
        frames, rng = decoded.frames, decoded.rng
        if self.mode == "labeled":
            item["video"], _ = self.transform.labeled(frames, rng, out.get("video"))
        elif self.mode == "unlabeled":
            item["weak"], item["strong"], _ = self.transform.weak_strong(
                frames, rng, out.get("weak"), out.get("strong")
            )
        else:
            per_offset = np.split(frames, decoded.frame_indices.shape[0])
            item["video"] = self.transform.eval(per_offset, out.get("video"))
        flat = decoded.frame_indices
        item["frame_indices"] = torch.from_numpy(flat[0] if self.mode != "eval" else flat)
        return item

    def __getitem__(self, key: SampleKey) -> dict[str, Any] | SkippedSample:
        return self.augment_decoded(self.decode(key))

    def __getitems__(self, keys: list[SampleKey]) -> list[dict[str, Any] | SkippedSample]:
        """A whole batch: decode every sample, then augment every sample (same results as one by one).

        Two passes because right after the decoder runs, the augmentation code runs 2-3x slower
        (measured here: the decoder evicts its instructions and data); phase by phase, each stays warm.
        The samples' tensors are rows of one batch buffer per key (in shared memory inside a worker), so
        :func:`~sefar_encoder.collate.collate_clips` returns the buffers without stacking. DataLoader calls
        this method instead of ``__getitem__`` when a dataset defines it.
        """
        decoded = [self.decode(key) for key in keys]
        kept = sum(not isinstance(d, SkippedSample) for d in decoded)
        dtype = torch.float32 if self.normalize else torch.uint8
        buffers = {key: _batch_buffer((kept, *shape), dtype) for key, shape in self.output_shapes().items()}
        items, row = [], 0
        for d in decoded:
            if isinstance(d, SkippedSample):
                items.append(d)
                continue
            items.append(self.augment_decoded(d, {key: buf[row] for key, buf in buffers.items()}))
            row += 1
        return items

    def validate(self, num_workers: int = 0, progress: bool = True) -> list[BadClip]:
        """Open every clip, read its frame count and decode its last frame (catches truncation).

        With ``on_bad_sample="error"`` raises :class:`BadClipsError` listing EVERY bad clip; with
        ``"skip"`` returns them and skips them later without trying to decode again. Clips that only
        PyAV could read are recorded in :attr:`fallbacks` (and said in one warning).
        """
        bad, fallbacks = find_bad_clips(
            self.entries, self.backend, num_workers, progress, f"validate {Path(self.source).name}"
        )
        self.fallbacks.update(fallbacks)
        if self.fallbacks:
            warnings.warn(
                f"{Path(self.source).name}: {len(self.fallbacks)} clip(s) decord cannot read were decoded "
                f"with PyAV: {', '.join(sorted(self.fallbacks)[:5])}{' ...' if len(self.fallbacks) > 5 else ''}",
                DecoderFallbackWarning,
                stacklevel=2,
            )
        if bad and self.on_bad_sample == "error":
            raise BadClipsError(self.source, bad)
        self.known_bad = {b.index: b.reason for b in bad}
        return bad


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch tensor; inside a DataLoader worker, in shared memory, so sending it to the
    main process copies nothing (what ``default_collate`` does for its stacked output)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    try:
        proto = torch.empty(0, dtype=dtype)
        storage = proto._typed_storage()._new_shared(int(np.prod(shape)))  # torch-private API
        return proto.new(storage).view(shape)
    except (AttributeError, RuntimeError):  # if that private API changes: one extra copy when sent
        return torch.empty(shape, dtype=dtype)
