"""Feature cache: encode every clip of a list once, then train and evaluate from tokens, never from video.

Shape notation: B clips, N tokens per clip, D token width.

    list file ──► eval data path (segment centres, centre crop) ──► encoder.encode ──► shards + index
    FeatureCache.get(clip_ids) ──► tokens [B, N, D]       (reads safetensors; decodes nothing)

Layout of a cache root (one folder per encoder fingerprint, so weights, token options or preprocessing
that differ never share features; a changed encoder simply finds no folder and encodes again)::

    <root>/<fingerprint[:16]>/
        index.json                  format, fingerprint, encoder description (options, preprocessing),
                                    dtype, token_shape [N, D], clips {id: shard, path, size, mtime_ns},
                                    skipped {id: path, reason, ...}, lists {path: sha256, counts}
        shard-00000.safetensors     up to ``shard_size`` clips, tensor "<clip id>" [N, D] each
        ...

A clip's id is ``gym_qa.clips.clip_id_of`` of its file (Gym-QA's ``video`` field). Shards are immutable;
the index is rewritten after every shard, so an interrupted build keeps what it encoded. Both go to a
temporary name and are renamed into place (``gym_qa.atomic_files``); a lock file serialises writers of one
folder. Rebuilding checks every listed clip's
path, size and mtime: an edited clip is encoded again (its old tensor stays, unreferenced, in an old
shard), an unchanged one is not touched. Clips that cannot be decoded follow the data path's
``on_bad_sample`` policy: ``error`` raises (after saving what was done), ``skip`` records them under
``skipped`` in the index; the same goes for a clip whose features come out non-finite. A build also
removes the temporary files a killed build left behind. Under ``accelerate launch``/``torchrun`` every
process encodes a share and rank 0 merges them into the same files (:mod:`mllm.feature_cache_ranks`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from gym_qa.atomic_files import atomic_replace, write_text_atomic
from gym_qa.clips import clip_id_of
from gym_qa.lists import ListEntry, ListFileError, read_list
from mllm import feature_cache_ranks
from mllm.encoders.base import VideoEncoder
from sefar_encoder.collate import collate_clips
from sefar_encoder.dataset import BadSamplePolicy, SkippedSample
from sefar_encoder.decoding import Backend

INDEX_FORMAT = "mllm.feature_cache/1"
INDEX_NAME = "index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StaleCacheError(RuntimeError):
    """The cache on disk was made by another encoder (fingerprint) or with other settings."""


class EncodingError(RuntimeError):
    """A clip decoded, but its features are unusable (non-finite); ``on_bad_sample`` decides."""


def cache_directory(root: str | os.PathLike, fingerprint: str) -> Path:
    """The folder of an encoder's features under ``root``."""
    return Path(root) / fingerprint[:16]


# ---- producing features ------------------------------------------------------------------------


@dataclass
class EncodedBatch:
    """One batch of :func:`encode_entries`: ``tokens [b, N, D]`` for ``entries`` (list order), and the
    clips of this batch that were skipped, with the reason."""

    entries: list[ListEntry]
    tokens: torch.Tensor
    skipped: list[tuple[ListEntry, str]] = field(default_factory=list)


def _collate_with_reasons(batch: list[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """:func:`collate_clips`, plus why each skipped clip was skipped (collate keeps only paths)."""
    out = collate_clips(batch)
    out["skip_reasons"] = {s.index: s.reason for s in batch if isinstance(s, SkippedSample)}
    return out


def encode_entries(
    encoder: VideoEncoder,
    entries: Sequence[ListEntry],
    batch_size: int = 8,
    num_workers: int = 0,
    backend: Backend = "decord",
    on_bad_sample: BadSamplePolicy = "error",
    progress: bool = True,
    desc: str = "encode",
) -> Iterator[EncodedBatch]:
    """Decode, preprocess (the data path's eval pipeline for ``encoder.preprocess``) and encode clips.

    The features a cache stores and what an on-the-fly evaluation computes both come from here.
    Loading does not touch the caller's torch RNG (eval decoding draws nothing from it and the loader
    has its own generator): a training run's random stream is the same with or without a cache build
    before it.
    """
    entries = list(entries)
    dataset = encoder.preprocess.eval_dataset(entries, backend=backend, on_bad_sample=on_bad_sample)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate_with_reasons,
        generator=torch.Generator().manual_seed(0),  # worker seeds; eval decoding draws nothing from them
    )
    bar = tqdm(total=len(entries), desc=desc, disable=not progress, unit="clip")
    try:
        for batch in loader:
            kept = [entries[i] for i in batch["index"].tolist()]
            skipped = [(entries[i], reason) for i, reason in batch["skip_reasons"].items()]
            bar.update(len(kept) + len(skipped))
            if not kept:
                yield EncodedBatch([], torch.empty(0), skipped)
                continue
            video = batch["video"][:, 0]  # one eval view per clip: [b, C, S, H, W]
            tokens = encoder.encode(video)  # [b, N, D]
            finite = torch.isfinite(tokens).flatten(1).all(dim=1).tolist()
            if not all(finite):
                bad = [e for e, ok in zip(kept, finite) if not ok]
                if on_bad_sample == "error":
                    raise EncodingError(
                        f"{bad[0].path}: the {encoder.name} encoder produced non-finite features"
                    )
                skipped += [(e, "non-finite features") for e in bad]
                keep = torch.tensor(finite)
                kept, tokens = [e for e, ok in zip(kept, finite) if ok], tokens[keep]
            yield EncodedBatch(kept, tokens, skipped)
    finally:
        bar.close()


# ---- the cache on disk --------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock of a cache folder for one writer (released by the OS if the process dies)."""
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _file_state(path: Path) -> dict[str, Any] | None:
    """What identifies a clip file's content cheaply (no reading): path, size, mtime; None if missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _ShardWriter:
    """Collects clips' tokens and writes them as shards of ``shard_size``, updating the index each time."""

    def __init__(self, directory: Path, index: dict[str, Any], shard_size: int, dtype: torch.dtype):
        self.directory, self.index, self.shard_size, self.dtype = directory, index, shard_size, dtype
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_meta: dict[str, dict[str, Any]] = {}

    def add(self, cid: str, tokens: torch.Tensor, state: dict[str, Any]) -> None:
        # clone: rows of one batch share storage, which safetensors refuses to save.
        self.pending[cid] = tokens.detach().to("cpu", self.dtype).clone()
        self.pending_meta[cid] = state
        if len(self.pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            numbers = [int(name[6:11]) for name in self.index["shards"]]
            name = f"shard-{max(numbers, default=-1) + 1:05d}.safetensors"
            with atomic_replace(self.directory / name) as tmp:
                save_file(self.pending, str(tmp))
            self.index["shards"][name] = len(self.pending)
            for cid, state in self.pending_meta.items():
                self.index["clips"][cid] = {"shard": name, **state}
                self.index["skipped"].pop(cid, None)
            self.pending, self.pending_meta = {}, {}
        _write_json(self.directory / INDEX_NAME, self.index)


def _new_index(
    encoder: VideoEncoder, fingerprint: str, dtype: torch.dtype, shard_size: int
) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint,
        "encoder": encoder.describe(),
        "dtype": str(dtype).removeprefix("torch."),
        "token_shape": [encoder.num_tokens, encoder.dim],
        "shard_size": shard_size,
        "shards": {},
        "clips": {},
        "skipped": {},
        "lists": {},
    }


@dataclass
class BuildReport:
    """What :func:`build_feature_cache` did, per call (all lists together)."""

    directory: Path
    fingerprint: str
    encoded: int = 0
    reused: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # clip id -> reason (this call's lists)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "directory": str(self.directory)}


def build_feature_cache(
    encoder: VideoEncoder,
    lists: str | os.PathLike | Sequence[str | os.PathLike],
    root: str | os.PathLike,
    batch_size: int = 8,
    num_workers: int = 0,
    backend: Backend = "decord",
    on_bad_sample: BadSamplePolicy = "error",
    shard_size: int = 1000,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> BuildReport:
    """Encode every clip of ``lists`` not yet cached (or changed since) into ``root``'s folder for
    ``encoder``; returns a :class:`BuildReport` (open the result with :meth:`FeatureCache.for_encoder`
    or ``FeatureCache(report.directory)``).

    With ``world_size`` > 1 every process of an initialised ``torch.distributed`` group calls this with
    its ``rank`` and the same arguments: the clips are encoded on all ranks and merged by rank 0 into the
    cache one process would have written, bit for bit (:mod:`mllm.feature_cache_ranks`); every rank gets
    rank 0's report, or the same error.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if isinstance(lists, (str, os.PathLike)):
        lists = [lists]
    start = time.perf_counter()
    fingerprint = encoder.fingerprint()
    if rank > 0:
        return feature_cache_ranks.follow(encoder, fingerprint, rank, world_size)
    directory = cache_directory(root, fingerprint)
    directory.mkdir(parents=True, exist_ok=True)
    report = BuildReport(directory, fingerprint)
    leader = None
    if world_size > 1:
        leader = feature_cache_ranks.Leader(encoder, directory, fingerprint, world_size)
    try:
        settings = (batch_size, num_workers, backend, on_bad_sample, shard_size, dtype, progress)
        _build_locked(encoder, lists, directory, fingerprint, report, leader, *settings)
    except BaseException as err:
        if leader is not None:
            leader.abort(err)
        raise
    report.seconds = time.perf_counter() - start
    if leader is not None:
        leader.finish(report)
    return report


def _build_locked(
    encoder: VideoEncoder,
    lists: Sequence[str | os.PathLike],
    directory: Path,
    fingerprint: str,
    report: BuildReport,
    leader: feature_cache_ranks.Leader | None,
    batch_size: int,
    num_workers: int,
    backend: Backend,
    on_bad_sample: BadSamplePolicy,
    shard_size: int,
    dtype: torch.dtype,
    progress: bool,
) -> None:
    """The body of :func:`build_feature_cache` (rank 0's, on several processes), under the folder lock."""
    with _locked(directory):
        for stray in directory.glob("*.tmp"):  # a killed writer's half file (we hold the lock)
            stray.unlink()
        # A killed multi-process build's staging files (whatever this build's process count).
        shutil.rmtree(directory / feature_cache_ranks.STAGING, ignore_errors=True)
        index_file = directory / INDEX_NAME
        index = json.loads(index_file.read_text()) if index_file.is_file() else None
        index = index or _new_index(encoder, fingerprint, dtype, shard_size)
        _check_index(index, directory, fingerprint)
        if index["dtype"] != str(dtype).removeprefix("torch."):
            raise StaleCacheError(
                f"{directory} stores {index['dtype']} features, asked for {dtype}: use the same dtype "
                "or another cache root"
            )
        # Every list is encoded with the same settings; only the clips differ.
        settings = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "backend": backend,
            "on_bad_sample": on_bad_sample,
        }
        encode: Callable[..., Iterator[EncodedBatch]] = partial(
            encode_entries, encoder, **settings, progress=progress
        )
        if leader is not None:
            encode = partial(leader.encode, settings=settings, chunk_size=shard_size, progress=progress)
        writer = _ShardWriter(directory, index, shard_size, dtype)
        for list_file in map(Path, lists):
            _cache_list(list_file, index, encode, writer, report, on_bad_sample)


def _cache_list(
    list_file: Path,
    index: dict[str, Any],
    encode: Callable[..., Iterator[EncodedBatch]],
    writer: _ShardWriter,
    report: BuildReport,
    on_bad_sample: BadSamplePolicy,
) -> None:
    """Bring the cache up to date for one list: encode what is new or changed, record the list."""
    directory = writer.directory
    entries = read_list(list_file)
    states: dict[str, dict[str, Any] | None] = {}
    for entry in entries:
        cid = clip_id_of(entry.path)
        if cid in states:
            raise ListFileError(
                f"{list_file}:{entry.line}: clip id {cid!r} appears twice (a clip id is the file name "
                "without its video extension)"
            )
        states[cid] = _file_state(entry.path)
        known = index["clips"].get(cid) or index["skipped"].get(cid)
        if known is not None and known["path"] != str(entry.path):
            raise StaleCacheError(
                f"{list_file}:{entry.line}: clip id {cid!r} is cached from {known['path']}, now listed as "
                f"{entry.path}: use one cache root per data set, or delete {directory}"
            )

    def current(cid: str) -> bool:
        state = states[cid]
        if state is None:  # missing file: let the decoder report it under the bad-sample policy
            return False
        if cid in index["clips"]:
            return {k: index["clips"][cid][k] for k in state} == state
        # A clip skipped before is tried again when it changed or when bad clips must now raise.
        return (
            on_bad_sample == "skip"
            and cid in index["skipped"]
            and ({k: index["skipped"][cid][k] for k in state} == state)
        )

    todo = [e for e in entries if not current(clip_id_of(e.path))]
    report.reused += len(entries) - len(todo)
    try:
        for batch in encode(todo, desc=f"encode {list_file.name}"):
            for entry, tokens in zip(batch.entries, batch.tokens):
                cid = clip_id_of(entry.path)
                writer.add(cid, tokens, states[cid] or {"path": str(entry.path)})
            for entry, reason in batch.skipped:
                cid = clip_id_of(entry.path)
                index["clips"].pop(cid, None)  # an edited clip that no longer decodes loses its features
                index["skipped"][cid] = {**(states[cid] or {"path": str(entry.path)}), "reason": reason}
            report.encoded += len(batch.entries)
    finally:
        writer.flush()  # also on errors: keep every clip encoded so far
    listed = [clip_id_of(e.path) for e in entries]
    report.skipped.update({c: index["skipped"][c]["reason"] for c in listed if c in index["skipped"]})
    index["lists"][str(list_file.resolve())] = {
        "sha256": _sha256(list_file),
        "num_clips": len(entries),
        "num_skipped": sum(c in index["skipped"] for c in listed),
    }
    _write_json(directory / INDEX_NAME, index)


def _check_index(index: dict[str, Any], directory: Path, fingerprint: str | None) -> None:
    if index.get("format") != INDEX_FORMAT:
        raise StaleCacheError(f"{directory}: index format {index.get('format')!r}, expected {INDEX_FORMAT!r}")
    if fingerprint is not None and index["fingerprint"] != fingerprint:
        raise StaleCacheError(
            f"{directory} holds features of encoder {index['fingerprint'][:16]}, not of this encoder "
            f"({fingerprint[:16]}): its weights, options or preprocessing differ; build the cache again"
        )


class FeatureCache:
    """Read side: ``get(clip_ids) -> tokens [B, N, D]`` from a folder :func:`build_feature_cache` wrote.

    ``fingerprint`` (an encoder's :meth:`~VideoEncoder.fingerprint`) makes opening fail with
    :class:`StaleCacheError` unless the features were made by exactly that encoder. Shards are opened
    lazily and memory-mapped; the object pickles without its file handles (DataLoader workers reopen).
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: str | None = None):
        self.directory = Path(directory)
        index_file = self.directory / INDEX_NAME
        if not index_file.is_file():
            raise FileNotFoundError(
                f"{self.directory}: no feature cache (build it with scripts/cache_features.py)"
            )
        self.index = json.loads(index_file.read_text())
        _check_index(self.index, self.directory, fingerprint)
        self._handles: dict[str, Any] = {}

    @classmethod
    def for_encoder(cls, root: str | os.PathLike, encoder: VideoEncoder) -> FeatureCache:
        """The cache of exactly this encoder under ``root`` (FileNotFoundError if never built)."""
        fingerprint = encoder.fingerprint()
        return cls(cache_directory(root, fingerprint), fingerprint=fingerprint)

    @property
    def fingerprint(self) -> str:
        return self.index["fingerprint"]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.index["dtype"]]

    @property
    def token_shape(self) -> tuple[int, int]:
        """``(N, D)`` of every clip's tokens."""
        n, d = self.index["token_shape"]
        return n, d

    @property
    def clip_ids(self) -> list[str]:
        return list(self.index["clips"])

    @property
    def skipped(self) -> dict[str, str]:
        """Clip id -> why it has no features."""
        return {cid: rec["reason"] for cid, rec in self.index["skipped"].items()}

    def __len__(self) -> int:
        return len(self.index["clips"])

    def __contains__(self, cid: object) -> bool:
        return cid in self.index["clips"]

    def get(self, clip_ids: Sequence[str]) -> torch.Tensor:
        """``tokens [B, N, D]`` (the cache's dtype) for ``clip_ids``, in that order."""
        clips = self.index["clips"]
        missing = [c for c in clip_ids if c not in clips]
        if missing:
            why = [
                f"{c} (skipped: {self.index['skipped'][c]['reason']})" if c in self.index["skipped"] else c
                for c in missing[:5]
            ]
            raise KeyError(f"{self.directory}: no features for {len(missing)} clip(s): {', '.join(why)}")
        out = torch.empty((len(clip_ids), *self.token_shape), dtype=self.dtype)
        for row, cid in enumerate(clip_ids):
            out[row] = self._shard(clips[cid]["shard"]).get_tensor(cid)
        return out

    def _shard(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.directory / name), framework="pt")
        return self._handles[name]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}
