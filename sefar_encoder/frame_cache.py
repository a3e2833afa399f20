"""On-disk cache of decoded, resized frames, to take decode cost out of repeated epochs
(docs/DESIGN.md §Decoding).

One ``.npy`` file per clip holds ALL its frames, ``[F, H', W', 3]`` uint8 with the short side resized
to ``short_side`` (never enlarged), so any later sampling of the clip is served from it. The key is the
clip's absolute path, mtime, size and the resize size: editing or replacing a clip makes a new entry
(old entries are not collected; delete the folder to reclaim space). Files are written to a temporary
name and renamed, so concurrent DataLoader workers and interrupted runs never leave a half-written
entry; entries are read memory-mapped.

    cache = FrameCache("/tmp/frames", short_side=92)
    with cache.open(path, backend="decord") as clip:   # same interface as decoding.open_video
        frames = clip.get(indices)

Shape notation: F frames in the clip, T requested frames, H'/W' cached pixels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Self

import numpy as np
import torch

from gym_qa.atomic_files import atomic_replace
from sefar_encoder.decoding import Backend, DecodeError, open_video
from sefar_encoder.transforms import resize_frames


class CachedClip:
    """An opened cache entry, memory-mapped, whose first axis is the clip's frames (pixels here, frame tokens
    in ``sefar_encoder.frame_tokens``); same interface as the decoders' clips."""

    def __init__(self, path: str, frames: np.ndarray):
        self.path = path
        self._frames = frames
        self.num_frames = int(frames.shape[0])

    def get(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
            raise IndexError(f"{self.path}: frame indices {indices.tolist()} outside [0, {self.num_frames})")
        return np.asarray(self._frames[indices])  # fancy index copies out of the memory map

    def close(self) -> None:
        self._frames = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def entry_file(cache_dir: Path, path: str | os.PathLike, *key: object) -> Path:
    """The ``.npy`` entry of a clip under ``cache_dir``, named by the clip's absolute path, mtime and size
    (and ``key``): an edited or replaced clip gets a new entry. :class:`DecodeError` when the clip does not
    exist."""
    path = Path(path).absolute()
    try:
        st = path.stat()
    except OSError:
        raise DecodeError(path, "file not found") from None
    digest = hashlib.sha1("|".join(map(str, (path, st.st_mtime_ns, st.st_size, *key))).encode()).hexdigest()
    return cache_dir / f"{path.stem}-{digest[:20]}.npy"


def open_entry(path: str | os.PathLike, entry: Path) -> CachedClip:
    """``entry`` (of the clip ``path``) memory-mapped; :class:`DecodeError` naming the clip when it cannot be
    read."""
    try:
        frames = np.load(entry, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DecodeError(Path(path), f"unreadable cache entry {entry.name}: {err}") from None
    return CachedClip(str(path), frames)


class FrameCache:
    """Decoded, short-side-resized uint8 frames of whole clips, one ``.npy`` per clip in ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike, short_side: int):
        if short_side < 1:
            raise ValueError(f"short_side must be positive, got {short_side}")
        self.cache_dir = Path(cache_dir)
        self.short_side = int(short_side)

    def entry_path(self, path: str | os.PathLike) -> Path:
        """Cache file of a clip; raises :class:`DecodeError` when the clip does not exist."""
        return entry_file(self.cache_dir, path, self.short_side)

    def _build(self, path: Path, entry: Path, backend: Backend) -> None:
        with open_video(path, backend) as clip:
            frames = clip.get(np.arange(clip.num_frames))  # one decode of the whole clip
        height, width = frames.shape[1:3]
        scale = self.short_side / min(height, width)
        if scale < 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            frames = resize_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), size)
            frames = frames.permute(0, 2, 3, 1).contiguous().numpy()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # one temporary name per process: DataLoader workers may fill the same entry at once
        with atomic_replace(entry) as tmp, open(tmp, "wb") as f:
            np.save(f, frames)

    def open(self, path: str | os.PathLike, backend: Backend = "decord") -> CachedClip:
        """The clip's cached frames, decoding and writing the entry first on a miss."""
        path = Path(path)
        entry = self.entry_path(path)
        if not entry.exists():
            self._build(path, entry, backend)
        return open_entry(path, entry)
