"""Loaders: a data set folder and its :class:`DataConfig` -> datasets -> batches (docs/DESIGN.md
§Dataset and loader).

    split_paths(root, label_rate) ──► build_datasets(cfg) (lists checked, every clip probed)
    InfiniteBatchSampler (seed, epoch -> permutation) ──► DataLoader(collate_clips) ──► batches
    SemiSupervisedLoader: labeled batch (B_l) and unlabeled batch (ratio × B_l) per step, resumable
    eval_loader: every clip of an eval dataset once, in list order

A batch may hold fewer samples than asked when clips are skipped (``on_bad_sample="skip"``).
:class:`SemiSupervisedLoader` keeps every process in step even when a batch is entirely skipped
(``keep_empty``): several processes must run the same number of steps, or their collective operations
would wait for each other forever.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gym_qa.lists import ListFileError, check_disjoint, read_list
from sefar_encoder.batch_sampler import InfiniteBatchSampler
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.collate import collate_clips, finish_batch
from sefar_encoder.dataset import Mode, VideoClipDataset
from sefar_encoder.frame_tokens import FrameTokenCache
from sefar_encoder.transforms import AugmentConfig


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
    """List files of a data set folder (docs/DESIGN.md §List files and splits); refuses a val list that is
    the test list."""
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
