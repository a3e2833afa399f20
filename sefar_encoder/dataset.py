"""Dataset, collate and the lock-step labeled/unlabeled loader of the SeFAR video data path.

    list file ──► VideoClipDataset[(index, seed)] ──► open clip (decoder or frame cache), read num_frames
        ──► DualLevelSampler picks S indices ──► ONE decode ──► ClipTransform ──► sample dict
    InfiniteBatchSampler (seed, epoch -> permutation) ──► DataLoader(collate_clips) ──► batches
    SemiSupervisedLoader: labeled batch (B_l) and unlabeled batch (ratio × B_l) per step, resumable

Sample dicts by ``mode`` (S = sum(views) frames, C = 3; clips are float32 normalised, or uint8 pixels
with ``normalize=False``):

- ``labeled``:   ``video [C, S, H, W]`` float, ``label`` int, ``index`` int, ``frame_indices [S]``
- ``unlabeled``: ``weak [C, S, H, W]`` (teacher), ``strong [C, S, H, W]`` (student), both from the same
  decoded frames; ``label`` (kept for analysis only, never for training), ``index``, ``frame_indices``
- ``eval``:      ``video [n_test, C, S, H, W]`` (temporal offsets × spatial crops), ``label``, ``index``,
  ``frame_indices [n_offsets, S]``

:func:`collate_clips` stacks them (``B`` in front), lists skipped clips under ``"skipped"`` (paths) and
``"skipped_reasons"``, and clips that decord could not read but PyAV could under ``"fallbacks"``
(``(path, decord's reason)``; see :mod:`sefar_encoder.decoding`).

Bad input (SPEC §2.1): a list line that is malformed fails when the list is read (``gym_qa.lists``
names file and line). A clip that cannot be decoded raises :class:`~sefar_encoder.decoding.DecodeError`
with ``on_bad_sample="error"`` (call :meth:`VideoClipDataset.validate` before training to get the full
list of bad files at once), or is skipped and counted with ``"skip"``: a batch then holds fewer samples;
no other clip is ever substituted. :class:`SemiSupervisedLoader` keeps every process in step even when a
batch is entirely skipped (``keep_empty``): several processes must run the same number of steps, or
their collective operations would wait for each other forever.

Readers are opened inside ``__getitem__`` / ``__getitems__`` (so inside DataLoader workers) and closed
after each sample; a dataset object holds only paths and settings and pickles cheaply into workers.
A DataLoader batch goes through ``__getitems__``: decode every sample, then augment every sample straight
into one batch buffer per key, which :func:`collate_clips` passes on without stacking.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
from tqdm import tqdm

from gym_qa.lists import ListEntry, ListFileError, check_disjoint, read_list
from sefar_encoder.decoding import Backend, DecodeError, DecoderFallbackWarning, open_video, probe_clip
from sefar_encoder.frame_cache import FrameCache
from sefar_encoder.frame_tokens import FrameTokenCache, TokenViews
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import (
    AugmentConfig,
    ClipTransform,
    normalize_video,
    one_thread,
    scaled_jitter_range,
)

Mode = Literal["labeled", "unlabeled", "eval"]
BadSamplePolicy = Literal["error", "skip"]
SampleKey = int | tuple[int, Sequence[int]]


@dataclass
class DataConfig:
    """Where the clips are and how they become batches (nested in a training config as ``data``)."""

    root: str = field(
        default="", metadata={"help": "data set folder: splits/<rate>/{train,unlabel}.csv, val/test"}
    )
    label_rate: int = field(default=10, metadata={"help": "labeled percentage: the splits/<rate> folder"})
    views: tuple[int, ...] = field(default=(2, 2, 4), metadata={"help": "frames per view; S = sum"})
    image_size: int = field(default=224, metadata={"help": "output crop size (pixels, square)"})
    batch_size: int = field(default=8, metadata={"help": "labeled clips per step (B_l)"})
    unlabeled_ratio: int = field(default=3, metadata={"help": "unlabeled clips per labeled clip (B_u / B_l)"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes per loader"})
    backend: Literal["decord", "pyav"] = field(default="decord", metadata={"help": "video decoder"})
    cache_dir: str | None = field(default=None, metadata={"help": "frame cache folder; null = no cache"})
    cache_short_side: int = field(
        default=0, metadata={"help": "short side of cached frames; 0 = top of the jitter range"}
    )
    on_bad_sample: Literal["error", "skip"] = field(
        default="error", metadata={"help": "undecodable clip: error (validate first) or skip and count"}
    )
    validate: bool = field(default=True, metadata={"help": "probe every clip before training"})
    uint8_transfer: bool = field(
        default=True,
        metadata={"help": "training loaders send uint8 clips from workers and normalise after transfer"},
    )
    seed: int = field(default=0, metadata={"help": "data order and augmentation seed"})
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class SplitPaths:
    train: Path
    unlabel: Path
    val: Path
    test: Path


def split_paths(root: str | os.PathLike, label_rate: int) -> SplitPaths:
    """List files of a data set folder (SPEC §1.1); refuses a val list that is the test list."""
    root = Path(root)
    paths = SplitPaths(
        train=root / "splits" / str(label_rate) / "train.csv",
        unlabel=root / "splits" / str(label_rate) / "unlabel.csv",
        val=root / "val.csv",
        test=root / "test.csv",
    )
    if paths.val.exists() and paths.test.exists() and paths.val.resolve() == paths.test.resolve():
        raise ListFileError(f"{paths.val} and {paths.test} are the same file; val must differ from test")
    return paths


@dataclass(frozen=True)
class SkippedSample:
    """Stands in for an undecodable clip under ``on_bad_sample="skip"``; dropped by :func:`collate_clips`."""

    index: int
    path: str
    reason: str


@dataclass
class Decoded:
    """A sample between decoding and augmentation: ``frames [n*S, H, W, 3]`` uint8 for
    ``frame_indices [n, S]`` (n = 1, or the number of temporal offsets in eval) and its ``rng``."""

    index: int
    label: int
    frame_indices: np.ndarray
    frames: np.ndarray
    rng: np.random.Generator | None  # None in eval mode, which draws nothing
    fallback: str | None = None  # decord's reason when PyAV decoded the clip instead


@dataclass(frozen=True)
class BadClip:
    index: int
    path: str
    line: int
    reason: str


def _where(source: str, line: int) -> str:
    """Where a clip is listed: ``list line 3 of <file>``, or ``list line 3`` for entries without a file."""
    return f"list line {line}" if source.startswith("<") else f"list line {line} of {source}"


class BadClipsError(RuntimeError):
    """Raised by :meth:`VideoClipDataset.validate`; lists every bad clip (``.bad``) in the message: a
    first line with the count, then one line per clip (file, list line, reason)."""

    def __init__(self, source: str, bad: list[BadClip], sources: list[str] | None = None):
        self.bad, self.source = bad, source
        self.sources = sources or [source] * len(bad)  # the list file of each bad clip
        lines = "\n".join(f"  {b.path} ({_where(s, b.line)}): {b.reason}" for s, b in zip(self.sources, bad))
        super().__init__(f"{source}: {len(bad)} clip(s) cannot be decoded:\n{lines}")

    @classmethod
    def combine(cls, errors: list[BadClipsError]) -> BadClipsError:
        """One error for the bad clips of several list files."""
        if len(errors) == 1:
            return errors[0]
        bad = [b for e in errors for b in e.bad]
        sources = [s for e in errors for s in e.sources]
        return cls(", ".join(e.source for e in errors), bad, sources)


class _Probe(Dataset):
    """Frame count + last-frame check of each clip, for a parallel :meth:`VideoClipDataset.validate`:
    ``(index, bad reason or None, decoder fallback reason or None)``."""

    def __init__(self, paths: list[Path], backend: Backend):
        self.paths, self.backend = paths, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None, str | None]:
        try:
            with warnings.catch_warnings():  # reported once, by validate(), not by every worker
                warnings.simplefilter("ignore", DecoderFallbackWarning)
                _, fallback = probe_clip(self.paths[i], self.backend, check_last_frame=True)
        except DecodeError as err:
            return i, err.reason or str(err), None
        return i, None, fallback


class VideoClipDataset(Dataset):
    """Clips of a list file as sample dicts (see module docstring); keys are ``index`` or
    ``(index, seed_words)`` where ``seed_words`` seeds this sample's frame choice and augmentation
    (the :class:`InfiniteBatchSampler` provides them, making runs reproducible and resumable).

    ``entries``: parsed list entries or a list file path. ``normalize=False`` leaves clips as uint8
    pixels (``[C, S, H, W]``, all augmentation applied) for :func:`finish_batch` to normalise after
    the transfer from workers. ``cache_dir`` enables the :class:`FrameCache` (``cache_short_side`` 0 =
    top of the jitter range). ``token_cache`` (a built :class:`FrameTokenCache`) serves frozen-stem
    tokens instead of pixels: every clip tensor then has ``[S, M, D]`` in place of ``[C, S, H, W]``.
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
        """Samples skipped in this process (with workers, use :attr:`SemiSupervisedLoader.num_skipped`)."""
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
        return Decoded(index, entry.label, flat, frames, rng, fallback)

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
        :func:`collate_clips` returns the buffers without stacking. DataLoader calls this method instead
        of ``__getitem__`` when a dataset defines it.
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
        probe_set = _Probe([e.path for e in self.entries], self.backend)
        loader = DataLoader(probe_set, batch_size=None, num_workers=num_workers)
        bad = []
        for i, reason, fallback in tqdm(
            loader,
            total=len(probe_set),
            desc=f"validate {Path(self.source).name}",
            disable=not progress,
            leave=False,
        ):
            if reason is not None:
                e = self.entries[i]
                bad.append(BadClip(i, str(e.path), e.line, reason))
            if fallback is not None:
                self.fallbacks[str(self.entries[i].path)] = fallback
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


def _rows_of_one_buffer(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The batch buffer whose consecutive rows are ``tensors`` (as made by ``__getitems__``), or None."""
    base = tensors[0]._base
    if base is None or base.shape[0] != len(tensors) or base.shape[1:] != tensors[0].shape:
        return None
    row_bytes = base[0].numel() * base.element_size()
    if any(
        t._base is not base or t.data_ptr() != base.data_ptr() + i * row_bytes for i, t in enumerate(tensors)
    ):
        return None
    return base


def collate_clips(batch: list[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Stack sample dicts along a new first axis B; ``"skipped"`` lists paths of skipped clips,
    ``"skipped_reasons"`` why, and ``"fallbacks"`` the ``(path, reason)`` of clips decoded with PyAV
    because decord failed on them.

    Tensors that are already the rows of one batch buffer (from ``VideoClipDataset.__getitems__``) are
    returned as that buffer; the rest go through torch's ``default_collate`` (which, inside a worker,
    stacks straight into shared memory). An all-skipped batch has ``index`` of length 0 and no tensors.
    """
    skipped = [b.path for b in batch if isinstance(b, SkippedSample)]
    reasons = [b.reason for b in batch if isinstance(b, SkippedSample)]
    fallbacks = [b["fallback"] for b in batch if not isinstance(b, SkippedSample) and "fallback" in b]
    kept = [
        {k: v for k, v in b.items() if k != "fallback"} if "fallback" in b else b
        for b in batch
        if not isinstance(b, SkippedSample)
    ]
    info = {"skipped": skipped, "skipped_reasons": reasons, "fallbacks": fallbacks}
    if not kept:
        return {"index": torch.empty(0, dtype=torch.long), **info}
    prebuilt = {}
    for key, value in kept[0].items():
        if isinstance(value, torch.Tensor):
            buffer = _rows_of_one_buffer([b[key] for b in kept])
            if buffer is not None:
                prebuilt[key] = buffer
    rest = [{k: v for k, v in b.items() if k not in prebuilt} for b in kept] if prebuilt else kept
    with one_thread():  # see transforms.one_thread: small per-batch copies
        out = default_collate(rest)
    out.update(prebuilt)
    out.update(info)
    return out


VIDEO_KEYS = ("video", "weak", "strong")


def finish_batch(
    batch: dict[str, Any], augment: AugmentConfig, device: str | torch.device | None = None
) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device`` (if given) and normalise uint8 clips with
    ``augment.mean/std``; float clips (already normalised in the workers) pass unchanged."""
    out = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        if device is not None:
            value = value.to(device, non_blocking=True)
        if key in VIDEO_KEYS and value.dtype == torch.uint8:
            # On CPU single-threaded: intra-op threads spin-wait and, on a busy machine, made this
            # 3-5x slower (see transforms.one_thread); on a GPU the thread count does not matter.
            with one_thread():
                value = normalize_video(value, augment.mean, augment.std)
        out[key] = value
    return out


def epoch_permutation(num_items: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
    """The data order of one epoch: a function of (seed, stream, epoch) only, so resuming reproduces it."""
    return np.random.default_rng([seed, stream, epoch]).permutation(num_items)


class InfiniteBatchSampler(Sampler):
    """Endless batches of keys ``(index, seed_words)`` walking through seeded epoch permutations.

    Position ``p`` of the stream is item ``p % N`` of epoch ``p // N``'s permutation; its augmentation
    seed is ``(seed, stream, epoch, p % N)``. ``start_batch`` resumes exactly where a run stopped. Batches
    run across epoch boundaries, so no item is dropped. With ``shard=(rank, world)`` each process gets
    items ``rank, rank + world, ...`` of every global batch, so any number of processes sees the same
    global batches (``batch_size`` is the global size and must be divisible by ``world``).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        stream: int = 0,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need num_items >= 1 and batch_size >= 1, got {num_items}, {batch_size}")
        rank, world = shard
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"global batch {batch_size} cannot be split into shard {rank} of {world}")
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.stream, self.start_batch = seed, stream, start_batch
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        pos = self.start_batch * self.batch_size
        epoch, perm = -1, None
        while True:
            batch = []
            for p in range(pos, pos + self.batch_size):
                e, i = divmod(p, self.num_items)
                if e != epoch:
                    epoch, perm = e, epoch_permutation(self.num_items, self.seed, e, self.stream)
                batch.append((int(perm[i]), (self.seed, self.stream, e, i)))
            pos += self.batch_size
            yield batch[self.rank :: self.world]


def make_loader(dataset: VideoClipDataset, batch_sampler: Sampler, num_workers: int = 0) -> DataLoader:
    """A DataLoader with :func:`collate_clips`; workers stay alive across batches.

    Its own generator keeps DataLoader start-up from drawing on torch's global RNG, which the training
    script checkpoints for the model's randomness (dropout, token mixing): a resumed run then continues
    that stream exactly, wherever the loader was re-created.
    """
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        collate_fn=collate_clips,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )


class SemiSupervisedLoader:
    """Lock-step steps of (labeled batch of B_l, unlabeled batch of ratio × B_l), resumable.

    ``for labeled, unlabeled in loader.steps(start, count)``: ``start`` is the global step (one step =
    one labeled + one unlabeled batch); the data order and augmentation of step k depend only on
    (seed, k), so a resumed run sees exactly the batches it would have seen. One epoch is
    :attr:`steps_per_epoch` steps, a pass over the unlabeled pool (as in SVFormer/SeFAR).
    Steps whose labeled or unlabeled batch is entirely skipped are counted in :attr:`empty_steps` and
    not yielded — or, with ``keep_empty=True``, yielded as ``None`` so that the caller's step count stays
    the data stream's position and every process of a multi-process run takes the same number of steps
    (each process skips its own clips; a process that stopped yielding would leave the others waiting in
    a collective operation). Skipped clips are counted in :attr:`num_skipped` (every time one is drawn)
    and named in :attr:`skipped` (path -> reason); clips decoded with the PyAV fallback in
    :attr:`fallbacks` (path -> decord's reason).

    Datasets built with ``normalize=False`` send uint8 pixels from the workers (a quarter of the bytes
    through shared memory; on this 2-core machine that moved the loader from ~0.77x to ~0.9x of decode
    speed); :func:`finish_batch` then normalises here, after moving to ``device`` if given (so on a GPU
    the conversion is nearly free). Either way the batches yielded hold float32 normalised clips.
    """

    def __init__(
        self,
        labeled: VideoClipDataset,
        unlabeled: VideoClipDataset,
        batch_size: int,
        ratio: int = 3,
        num_workers: int = 0,
        seed: int = 0,
        device: str | torch.device | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.labeled, self.unlabeled = labeled, unlabeled
        self.device, self.shard = device, shard
        self.batch_size, self.unlabeled_batch_size = batch_size, ratio * batch_size
        self.num_workers, self.seed = num_workers, seed
        self.steps_per_epoch = max(1, len(unlabeled) // self.unlabeled_batch_size)
        self.num_skipped = 0
        self.skipped: dict[str, str] = {}
        self.fallbacks: dict[str, str] = {}
        self.empty_steps = 0

    @property
    def skipped_paths(self) -> list[str]:
        return sorted(self.skipped)

    def _account(self, batch: dict[str, Any]) -> bool:
        """Count a batch's skipped and fallback clips; True when it kept at least one clip."""
        self.num_skipped += len(batch["skipped"])
        self.skipped.update(zip(batch["skipped"], batch["skipped_reasons"]))
        self.fallbacks.update(batch["fallbacks"])
        return len(batch["index"]) > 0

    def steps(
        self, start: int = 0, count: int | None = None, keep_empty: bool = False
    ) -> Iterator[tuple[dict, dict] | None]:
        """Yield ``(labeled_batch, unlabeled_batch)`` for global steps ``start, start+1, ...`` (``None`` for
        a step with an entirely skipped batch when ``keep_empty``)."""
        labeled = self._loader(self.labeled, self.batch_size, 0, start)
        unlabeled = self._loader(self.unlabeled, self.unlabeled_batch_size, 1, start)
        pairs = zip(labeled, unlabeled)
        for lab, unl in pairs if count is None else itertools.islice(pairs, count):
            if not (self._account(lab) & self._account(unl)):  # & : account for both batches
                self.empty_steps += 1
                if keep_empty:
                    yield None
                continue
            yield (
                finish_batch(lab, self.labeled.augment, self.device),
                finish_batch(unl, self.unlabeled.augment, self.device),
            )

    def labeled_steps(
        self, start: int = 0, count: int | None = None, keep_empty: bool = False
    ) -> Iterator[dict | None]:
        """Only the labeled batches of steps ``start, start+1, ...`` (supervised phases decode nothing else);
        they are the same batches :meth:`steps` pairs with unlabeled ones. ``keep_empty`` as in :meth:`steps`."""
        batches = self._loader(self.labeled, self.batch_size, 0, start)
        for lab in batches if count is None else itertools.islice(batches, count):
            if not self._account(lab):
                self.empty_steps += 1
                if keep_empty:
                    yield None
                continue
            yield finish_batch(lab, self.labeled.augment, self.device)

    def _loader(self, dataset: VideoClipDataset, batch_size: int, stream: int, start: int) -> DataLoader:
        sampler = InfiniteBatchSampler(len(dataset), batch_size, self.seed, stream, start, self.shard)
        return make_loader(dataset, sampler, self.num_workers)

    def epoch(self, epoch: int) -> Iterator[tuple[dict, dict]]:
        """The steps of one epoch: ``steps(epoch * steps_per_epoch, steps_per_epoch)``."""
        return self.steps(epoch * self.steps_per_epoch, self.steps_per_epoch)


def build_datasets(
    cfg: DataConfig,
    num_classes: int,
    splits: Sequence[str] = ("train", "unlabel", "val", "test"),
    progress: bool = True,
    token_cache: FrameTokenCache | None = None,
) -> dict[str, VideoClipDataset]:
    """Datasets for a data set folder: ``train`` labeled, ``unlabel`` unlabeled, ``val``/``test`` eval.

    Checks that labeled and unlabeled lists are disjoint, and validates every clip when ``cfg.validate``
    (every split first, so that ``on_bad_sample="error"`` reports the bad clips of ALL lists at once).
    """
    paths = split_paths(cfg.root, cfg.label_rate)
    modes: dict[str, Mode] = {"train": "labeled", "unlabel": "unlabeled", "val": "eval", "test": "eval"}
    entries = {name: read_list(getattr(paths, name), num_classes) for name in splits}
    if "train" in entries and "unlabel" in entries:
        check_disjoint(train=entries["train"], unlabel=entries["unlabel"])
    datasets = {}
    for name in splits:
        ds = VideoClipDataset(
            entries[name],
            num_classes,
            modes[name],
            views=cfg.views,
            image_size=cfg.image_size,
            augment=cfg.augment,
            cache_dir=cfg.cache_dir,
            cache_short_side=cfg.cache_short_side,
            backend=cfg.backend,
            on_bad_sample=cfg.on_bad_sample,
            # Training clips cross the worker boundary as uint8 (SemiSupervisedLoader normalises them).
            normalize=not (cfg.uint8_transfer and modes[name] != "eval"),
            token_cache=token_cache,
        )
        ds.source = str(getattr(paths, name))
        datasets[name] = ds
    if cfg.validate:
        errors = []
        for ds in datasets.values():
            if len(ds):
                try:
                    ds.validate(num_workers=cfg.num_workers, progress=progress)
                except BadClipsError as err:
                    errors.append(err)
        if errors:
            raise BadClipsError.combine(errors)
    return datasets


def build_semi_loader(
    cfg: DataConfig,
    datasets: dict[str, VideoClipDataset],
    device: str | torch.device | None = None,
    shard: tuple[int, int] = (0, 1),
) -> SemiSupervisedLoader:
    """The lock-step loader over ``datasets["train"]`` and ``datasets["unlabel"]`` with ``cfg``'s sizes
    (``cfg.batch_size`` global; ``shard=(rank, world)`` takes this process's part of each batch)."""
    return SemiSupervisedLoader(
        datasets["train"],
        datasets["unlabel"],
        cfg.batch_size,
        cfg.unlabeled_ratio,
        cfg.num_workers,
        cfg.seed,
        device,
        shard,
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Plain ordered pass over an eval dataset (every clip once, in list order).

    Its own generator: DataLoader would otherwise draw a base seed from torch's global RNG at every pass,
    so evaluating during training would shift the training's random stream (see :func:`make_loader`).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_clips,
        generator=torch.Generator().manual_seed(0),
    )
