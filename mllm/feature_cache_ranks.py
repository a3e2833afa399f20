"""Building the feature cache on several processes (``accelerate launch``/``torchrun``): every rank encodes
a share of the clips, rank 0 merges them into the one cache a single process would have written.

Shape notation: b clips in a batch, N tokens per clip, D token width; W processes (ranks).

    rank 0: lock, read index, which clips to encode ──broadcast {"encode", todo}──► every rank
    every rank r: batches r, r+W, r+2W, ... of todo ──encode_entries──► <cache>/.ranks/rank-r-*.safetensors
    all_gather(status: each batch's kept / skipped clips, the first error) ──► every rank
    rank 0: batches 0, 1, 2, ... read back in list order ──► the same shard writer as one process
    rank 0 ──broadcast {"done", report} (or {"abort", why})──► every rank returns (or raises)

Why the result is bit-identical to a one-process build: the clips are split into the same batches
(``batch_size`` of the todo list, in order) and each batch is encoded whole by one rank, so every clip's
tokens come from the same encoder call with the same batch neighbours; rank 0 then feeds them, in batch
order, to the writer a single process uses (same shards, same index).

Failures: a rank that fails (bad clip under ``on_bad_sample: error``, non-finite features, an exception)
records where; after the gather every rank knows the first failed batch, rank 0 keeps exactly the batches
before it (what one process would have kept) and every rank raises the same error. The index lists only
clips whose tokens are in a finished shard and records a list only once all its clips are done, so an
interrupted build never looks complete; the staging files are not part of the cache (removed after each
list, and by the next build if a process was killed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from gym_qa.clips import clip_id_of
from gym_qa.lists import ListEntry
from mllm.encoders.base import VideoEncoder
from sefar_encoder.decoding import DecodeError

STAGING = ".ranks"  # under the cache folder; never read by FeatureCache


class RankError(RuntimeError):
    """A build on several processes stopped on another rank (the message says which and why)."""


def _broadcast(message: dict[str, Any] | None) -> dict[str, Any]:
    holder = [message]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _gather(status: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, status)
    return out


def batches_of(todo: Sequence[ListEntry], batch_size: int) -> list[list[ListEntry]]:
    """The batches one process would encode ``todo`` in (``batch_size`` clips, the last one shorter)."""
    return [list(todo[i : i + batch_size]) for i in range(0, len(todo), batch_size)]


def share_of(todo: Sequence[ListEntry], batch_size: int, rank: int, world_size: int) -> list[ListEntry]:
    """Rank ``rank``'s clips: batches rank, rank + W, ... concatenated. Every batch but the last overall one
    is full, so a DataLoader with the same ``batch_size`` cuts this share into exactly those batches."""
    return [e for batch in batches_of(todo, batch_size)[rank::world_size] for e in batch]


def _rebuild_error(error: dict[str, Any]) -> Exception:
    """The exception a failed rank reported, rebuilt on every rank (same type for the ones callers catch)."""
    from mllm.feature_cache import EncodingError, StaleCacheError  # the cache module imports this one

    known = {"DecodeError": DecodeError, "EncodingError": EncodingError, "StaleCacheError": StaleCacheError}
    if error["type"] in known:
        return known[error["type"]](error["message"])
    return RankError(f"rank {error['rank']}: {error['type']}: {error['message']}")


def _first_error(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The failure of the lowest batch number (the one a single process would have met first)."""
    errors = [s["error"] for s in statuses if s["error"] is not None]
    return min(errors, key=lambda e: e["batch"], default=None)


def encode_share(
    encoder: VideoEncoder,
    todo: Sequence[ListEntry],
    settings: dict[str, Any],
    fingerprints: tuple[str, str],
    staging: Path,
    rank: int,
    world_size: int,
    chunk_size: int,
    progress: bool = False,
    desc: str = "encode",
) -> dict[str, Any]:
    """Encode this rank's batches of ``todo`` into staging files; never raises (the failure goes into the
    returned status, which every rank must see in the gather that follows). ``fingerprints`` = (this
    rank's encoder, rank 0's): they must be equal."""
    from mllm.feature_cache import StaleCacheError, encode_entries  # the cache module imports this one

    status: dict[str, Any] = {"rank": rank, "batches": [], "error": None}
    pending: dict[str, torch.Tensor] = {}
    unsaved: list[dict[str, Any]] = []  # batch records whose tokens are still in `pending`

    def save() -> None:
        if pending:
            name = f"rank-{rank}-{len(list(staging.glob(f'rank-{rank}-*')))}.safetensors"
            save_file(pending, str(staging / name))
            for record in unsaved:
                record["file"] = name
            pending.clear()
        unsaved.clear()

    def fail(err: BaseException, batch: int) -> None:
        status["error"] = {"rank": rank, "batch": batch, "type": type(err).__name__, "message": str(err)}

    if fingerprints[0] != fingerprints[1]:
        stale = StaleCacheError(
            f"rank {rank} built another encoder than rank 0 (fingerprints differ): every process must load "
            "the same weights and options"
        )
        fail(stale, 0)
        return status
    share = share_of(todo, settings["batch_size"], rank, world_size)
    try:
        for batch in encode_entries(encoder, share, **settings, progress=progress, desc=desc):
            record = {
                "kept": [clip_id_of(e.path) for e in batch.entries],
                "skipped": [[clip_id_of(e.path), reason] for e, reason in batch.skipped],
                "file": None,
            }
            for cid, tokens in zip(record["kept"], batch.tokens):
                pending[cid] = tokens.detach().to("cpu").clone()  # [N, D]; clone: rows share storage
            status["batches"].append(record)
            unsaved.append(record)
            if len(pending) >= chunk_size:
                save()
    except Exception as err:  # noqa: BLE001 - any failure goes to every rank, which all raise it
        fail(err, rank + len(status["batches"]) * world_size)
    try:
        save()
    except Exception as err:  # noqa: BLE001 - the unsaved batches are lost: fail at the first of them
        first = len(status["batches"]) - len(unsaved)
        del status["batches"][first:]
        fail(err, rank + first * world_size)
    return status


class Leader:
    """Rank 0's side: sends the work, encodes its own share, merges everyone's batches in order."""

    def __init__(self, encoder: VideoEncoder, directory: Path, fingerprint: str, world_size: int):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"building the feature cache on {world_size} processes needs torch.distributed initialised "
                "(accelerate launch / torchrun)"
            )
        self.encoder, self.fingerprint, self.world_size = encoder, fingerprint, world_size
        self.staging = directory / STAGING
        self.followers_waiting = True  # the other ranks wait for a message from us

    def clear_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def encode(
        self,
        todo: Sequence[ListEntry],
        *,
        settings: dict[str, Any],
        chunk_size: int,
        progress: bool,
        desc: str = "encode",
    ) -> Iterator[Any]:
        """The :func:`~mllm.feature_cache.encode_entries` of a one-process build, batch by batch, encoded
        on every rank; raises the first failure after yielding the batches before it."""
        from mllm.feature_cache import EncodedBatch

        todo = list(todo)
        self.clear_staging()
        self.staging.mkdir()
        message = {
            "kind": "encode",
            "todo": todo,
            "settings": settings,
            "fingerprint": self.fingerprint,
            "staging": str(self.staging),
            "chunk_size": chunk_size,
        }
        _broadcast(message)
        try:
            status = encode_share(
                self.encoder,
                todo,
                settings,
                (self.fingerprint, self.fingerprint),
                self.staging,
                0,
                self.world_size,
                chunk_size,
                progress=progress,
                desc=f"{desc} (rank 0 of {self.world_size})",
            )
            statuses = _gather(status, self.world_size)
            error = _first_error(statuses)
            if error is not None:
                self.followers_waiting = False  # they raise the same error now
            by_id = {clip_id_of(e.path): e for e in todo}
            files: dict[str, Any] = {}
            num_batches = len(batches_of(todo, settings["batch_size"]))
            for number in range(num_batches if error is None else error["batch"]):
                record = statuses[number % self.world_size]["batches"][number // self.world_size]
                tokens = torch.empty(0)
                if record["kept"]:
                    if record["file"] not in files:
                        files[record["file"]] = safe_open(str(self.staging / record["file"]), framework="pt")
                    tokens = torch.stack([files[record["file"]].get_tensor(c) for c in record["kept"]])
                skipped = [(by_id[cid], reason) for cid, reason in record["skipped"]]
                yield EncodedBatch([by_id[c] for c in record["kept"]], tokens, skipped)  # [b, N, D]
            if error is not None:
                raise _rebuild_error(error)
        finally:
            self.clear_staging()

    def finish(self, report: Any) -> None:
        """Release the other ranks with the build's report."""
        _broadcast({"kind": "done", "report": report})
        self.followers_waiting = False

    def abort(self, err: BaseException) -> None:
        """Tell waiting ranks that rank 0 stopped (a bad list file, another encoder's cache, ...)."""
        if self.followers_waiting:
            self.followers_waiting = False
            _broadcast({"kind": "abort", "error": f"{type(err).__name__}: {err}"})


def follow(encoder: VideoEncoder, fingerprint: str, rank: int, world_size: int) -> Any:
    """A rank other than 0: encode the shares rank 0 hands out until it sends the report (returned)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"rank {rank} of {world_size}: torch.distributed is not initialised")
    while True:
        message = _broadcast(None)
        if message["kind"] == "done":
            return message["report"]
        if message["kind"] == "abort":
            raise RankError(f"the feature cache build stopped on rank 0: {message['error']}")
        status = encode_share(
            encoder,
            message["todo"],
            message["settings"],
            (fingerprint, message["fingerprint"]),
            Path(message["staging"]),
            rank,
            world_size,
            message["chunk_size"],
        )
        error = _first_error(_gather(status, world_size))
        if error is not None:
            raise _rebuild_error(error)
