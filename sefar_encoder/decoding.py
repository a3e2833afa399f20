"""Decoding: turn a video file into uint8 RGB frames (docs/DESIGN.md §Decoding). The one way to read a clip.

    clip = open_video(path, backend="decord")   # header only: clip.num_frames
    frames = clip.get(indices)                  # [T, H, W, 3] uint8 RGB, any order, duplicates allowed
    clip.close()
    header = probe_header(path)                 # width, height, duration: nothing decoded, no decoder opened

decord (``VideoReader.get_batch``) is the default backend, PyAV the fallback and the reference in tests
(both are frame-exact on H.264 clips written by PyAV). Any pixel format (grayscale, yuv444p, full-range
yuvj) comes out as 3-channel RGB.

Per-clip fallback: decord fails on some valid files (e.g. small H.264 clips whose width is not a multiple
of its copy alignment, such as 48 px: "The size must exactly match"). With ``backend="decord"`` a clip
that decord cannot open or decode is read with PyAV instead; the clip's ``fallback`` attribute then holds
decord's reason (``None`` otherwise), a :class:`DecoderFallbackWarning` names the file (once per file and
process), and the data path counts such clips (``SemiSupervisedLoader.fallback_paths``). Only when PyAV
fails too is the file bad: :class:`DecodeError` gives both reasons. Every failure that is the file's fault (missing, empty, not a video,
truncated) raises :class:`DecodeError` naming the file with a one-line reason; the library's own
exception is not chained, so users never see a deep decord/FFmpeg traceback, and decord's native log
line for the same failure is muted, so stderr holds the toolkit's message only.

Readers hold open file handles and native state, so they are opened per sample inside the process that
decodes (DataLoader workers), never created up front and pickled into workers. ``DECODE_COUNTER`` counts
calls that decode pixels from a file, so tests can assert "one decode per sample".

Shape notation: T requested frames, H/W pixels of the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Self

import numpy as np

Backend = Literal["decord", "pyav"]
BACKENDS: tuple[str, ...] = ("decord", "pyav")


class DecodeError(RuntimeError):
    """A clip cannot be decoded; ``str(err)`` names the file and the reason.

    ``reason`` may be omitted so that a message re-raised across a DataLoader worker (which rebuilds the
    exception from its text alone) keeps the original wording.
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None):
        path = str(path)
        if reason is None and "\n" in path:  # re-raised from a DataLoader worker: the traceback's last line
            path, reason = _parse_worker_message(path)
        self.path = path
        self.reason = reason
        super().__init__(self.path if reason is None else f"{self.path}: {_CANNOT} ({reason})")

    def without_path(self) -> str:
        """The message without the file's path, for callers that name the file themselves."""
        return f"{_CANNOT} ({self.reason})" if self.reason else str(self)


_CANNOT = "cannot decode video"


def _parse_worker_message(text: str) -> tuple[str, str | None]:
    """``(path, reason)`` from torch's "Caught DecodeError in DataLoader worker ... Original Traceback"
    text, whose last line is ``sefar_encoder.decoding.DecodeError: <path>: cannot decode video (<reason>)``."""
    last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
    last = last.split("DecodeError: ", 1)[-1]
    head, sep, tail = last.partition(f": {_CANNOT} (")
    if sep and tail.endswith(")"):
        return head, tail[:-1]
    return last, None


class DecoderFallbackWarning(UserWarning):
    """decord could not read a clip that PyAV could; the clip was decoded with PyAV."""


class DecodeCounter:
    """How many times pixels were decoded from a file in this process (one ``get`` = one call)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self) -> None:
        self.count += 1

    def reset(self) -> None:
        self.count = 0


DECODE_COUNTER = DecodeCounter()


class VideoClip(Protocol):
    """An opened clip. ``get(indices) -> [T, H, W, 3]`` uint8 RGB; indices in ``[0, num_frames)``."""

    path: str
    num_frames: int

    def get(self, indices: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def _check_file(path: Path) -> None:
    """Cheap checks with clearer messages than the decoders give (theirs read 'invalid data')."""
    if not path.exists():
        raise DecodeError(path, "file not found")
    if not path.is_file():
        raise DecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")


def _check_indices(path: str, indices: np.ndarray, num_frames: int) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= num_frames):
        # A caller bug, not a bad file: the sampler only picks indices in [0, num_frames).
        raise IndexError(f"{path}: frame indices {indices.tolist()} outside [0, {num_frames})")
    return indices


def _short_reason(err: BaseException) -> str:
    """The first line of a library message, without decord's '[hh:mm:ss] /src/...cc:123:' prefix."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if ".cc:" in text:
        text = text.split(".cc:", 1)[1].split(":", 1)[-1].strip()
    if text.startswith("Error reading"):  # decord's open failure; FFmpeg's cause went to its (muted) log
        text = "not a video, or its container index is missing or damaged"
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)  # PyAV: "[Errno 1094995529] Invalid data ...: '<path>'"
    if text.endswith("'") and ": '" in text:  # the file name: callers name the file themselves
        text = text.rsplit(": '", 1)[0]
    return text[:200]


_NATIVE_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration: decord's C++ logger writes its own copy of
    an open failure ("[hh:mm:ss] .../src/video/video_reader.cc:83: ERROR opening: <file>, <reason>")
    straight to fd 2, which ``decord.logging.set_level`` (FFmpeg's log only) does not reach, while the
    :class:`DecodeError` raised for it already names the file and the reason.

    Process-wide, so other threads' stderr output is lost for as long as decord opens a file (a header
    read); the lock keeps overlapping opens from restoring each other's descriptors.
    """
    with _NATIVE_STDERR_LOCK:
        if sys.stderr is not None:
            sys.stderr.flush()  # what Python buffered before the window is printed, not swallowed
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a detached process): nothing to mute
            saved = None
        if saved is None:
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(devnull)
            os.close(saved)


class _DecordClip:
    """decord reader; one ``get_batch`` over the sorted unique indices, then re-expanded."""

    def __init__(self, path: Path, num_threads: int):
        try:
            import decord
        except ImportError as err:  # decord has no wheels for some platforms (e.g. macOS arm64)
            raise ImportError("decord is not installed; use backend='pyav'") from err
        from decord._ffi.base import DECORDError

        decord.logging.set_level(decord.logging.QUIET)  # FFmpeg chatter would flood worker logs
        self._errors = (RuntimeError, DECORDError)
        self.path = str(path)
        try:
            with _native_stderr_muted():  # opening is the call that logs natively; get_batch does not
                self._reader = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=num_threads)
            self.num_frames = len(self._reader)
        except self._errors as err:  # messages carry C++ source context; keep the first line
            raise DecodeError(path, _short_reason(err)) from None
        if self.num_frames < 1:
            raise DecodeError(path, "no video frames")

    def get(self, indices: np.ndarray) -> np.ndarray:
        indices = _check_indices(self.path, indices, self.num_frames)
        # Sorted unique indices: each frame decoded once and decord seeks forward only.
        unique, inverse = np.unique(indices, return_inverse=True)
        DECODE_COUNTER.add()
        try:
            frames = self._reader.get_batch(unique.tolist()).asnumpy()
        except self._errors as err:
            raise DecodeError(self.path, _short_reason(err)) from None
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DecodeError(self.path, f"unexpected decoded shape {frames.shape}")
        return frames[inverse]

    def close(self) -> None:
        self._reader = None


class _PyAVClip:
    """PyAV reader; decodes sequentially up to the largest requested index (clips here are short)."""

    def __init__(self, path: Path):
        import av

        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise DecodeError(path, _short_reason(err)) from None
        if not self._container.streams.video:
            self.close()
            raise DecodeError(path, "no video stream")
        stream = self._container.streams.video[0]
        stream.codec_context.thread_count = 1  # one thread per DataLoader worker; cores are few
        self.num_frames = int(stream.frames)
        if self.num_frames <= 0:
            # Containers without a frame count in the header (mkv, webm): count packets, no decoding.
            try:
                self.num_frames = sum(1 for p in self._container.demux(stream) if p.size > 0)
                self._container.seek(0)
            except av.FFmpegError as err:
                self.close()
                raise DecodeError(path, _short_reason(err)) from None
        if self.num_frames < 1:
            self.close()
            raise DecodeError(path, "no video frames")

    def get(self, indices: np.ndarray) -> np.ndarray:
        import av

        indices = _check_indices(self.path, indices, self.num_frames)
        wanted = set(indices.tolist())
        last = max(wanted) if wanted else -1
        found: dict[int, np.ndarray] = {}
        DECODE_COUNTER.add()
        try:
            self._container.seek(0)
            stream = self._container.streams.video[0]
            for i, frame in enumerate(self._container.decode(stream)):
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")  # any pix_fmt (gray, yuvj...) -> RGB
                if i >= last:
                    break
        except av.FFmpegError as err:
            raise DecodeError(self.path, _short_reason(err)) from None
        if len(found) < len(wanted):
            raise DecodeError(self.path, f"truncated: frame {last} of {self.num_frames} could not be decoded")
        if not wanted:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.stack([found[i] for i in indices.tolist()])

    def close(self) -> None:
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None


class _DecordWithFallback:
    """decord, or PyAV for this one clip when decord cannot open or decode it (see module docstring)."""

    def __init__(self, path: Path, num_threads: int):
        self.path = str(path)
        self.fallback: str | None = None  # decord's reason once PyAV has taken over
        self._warned = False
        self._clip: VideoClip
        try:
            self._clip = _DecordClip(path, num_threads)
        except DecodeError as err:
            self._switch_to_pyav(err)
        self.num_frames = self._clip.num_frames

    def _both_failed(self, pyav_err: DecodeError) -> DecodeError:
        return DecodeError(self.path, f"{self.fallback}; PyAV fallback: {pyav_err.reason}")

    def _switch_to_pyav(self, err: DecodeError) -> None:
        self.fallback = err.reason
        try:
            clip = _PyAVClip(Path(self.path))
        except DecodeError as pyav_err:
            raise self._both_failed(pyav_err) from None
        if hasattr(self, "num_frames") and clip.num_frames != self.num_frames:
            clip.close()  # the caller chose its indices from decord's count
            raise DecodeError(
                self.path,
                f"{err.reason}; PyAV fallback counts {clip.num_frames} frames, decord {self.num_frames}",
            )
        self._clip = clip

    def get(self, indices: np.ndarray) -> np.ndarray:
        if self.fallback is None:
            try:
                return self._clip.get(indices)
            except DecodeError as err:
                self._clip.close()
                self._switch_to_pyav(err)
        try:
            frames = self._clip.get(indices)
        except DecodeError as pyav_err:
            raise self._both_failed(pyav_err) from None
        if not self._warned:  # said once the fallback has actually decoded the clip
            self._warned = True
            warnings.warn(
                f"{self.path}: decord failed ({self.fallback}); decoded with PyAV",
                DecoderFallbackWarning,
                stacklevel=2,
            )
        return frames

    def close(self) -> None:
        self._clip.close()


class _ClosingClip:
    """Context-manager wrapper so ``with open_video(...) as clip:`` closes the reader."""

    def __init__(self, clip: VideoClip):
        self._clip = clip
        self.path = clip.path
        self.num_frames = clip.num_frames

    @property
    def fallback(self) -> str | None:
        """decord's reason when this clip is read with PyAV instead (``backend="decord"`` only)."""
        return getattr(self._clip, "fallback", None)

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self._clip.get(indices)

    def close(self) -> None:
        self._clip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(
    path: str | os.PathLike, backend: Backend = "decord", num_threads: int = 1, fallback: bool = True
) -> _ClosingClip:
    """Open a clip (reads the header, decodes nothing). Raises :class:`DecodeError` for bad files.

    ``num_threads`` is decord's decoder thread count; 1 by default because each DataLoader worker
    already occupies a core. ``fallback``: with decord, read the clip with PyAV when decord fails on it.
    """
    path = Path(path)
    _check_file(path)
    if backend == "decord":
        clip = _DecordWithFallback(path, num_threads) if fallback else _DecordClip(path, num_threads)
        return _ClosingClip(clip)
    if backend == "pyav":
        return _ClosingClip(_PyAVClip(path))
    raise ValueError(f"unknown decoding backend {backend!r}; choose one of {BACKENDS}")


def read_frames(
    path: str | os.PathLike, indices: np.ndarray | list[int], backend: Backend = "decord"
) -> tuple[np.ndarray, int]:
    """Decode ``indices`` of one clip: ``(frames [T, H, W, 3] uint8, num_frames)``."""
    with open_video(path, backend) as clip:
        return clip.get(np.asarray(indices)), clip.num_frames


def probe(path: str | os.PathLike, backend: Backend = "decord", check_last_frame: bool = True) -> int:
    """Frame count of a clip; with ``check_last_frame`` also decode the last frame (catches truncation,
    which a header read alone misses when the index sits at the start of the file)."""
    return probe_clip(path, backend, check_last_frame)[0]


def probe_clip(
    path: str | os.PathLike, backend: Backend = "decord", check_last_frame: bool = True
) -> tuple[int, str | None]:
    """:func:`probe`, also returning decord's reason when the clip needed the PyAV fallback (else None)."""
    with open_video(path, backend) as clip:
        if check_last_frame:
            clip.get(np.array([clip.num_frames - 1]))
        return clip.num_frames, clip.fallback


@dataclass(frozen=True)
class VideoHeader:
    """What a clip's container header says about its first video stream (nothing decoded)."""

    width: int  # pixels
    height: int
    duration_s: float | None  # None when neither the stream nor the container records it


def probe_header(path: str | os.PathLike) -> VideoHeader:
    """Frame size and duration of a clip from its container header, read with PyAV without decoding a frame
    and without opening decord: what a server checks before it lets a decoder near an upload. Raises
    :class:`DecodeError` for a file whose header cannot be read."""
    import av

    path = Path(path)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(path, "no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.frames and stream.average_rate:
                duration = float(stream.frames / stream.average_rate)
            else:
                duration = None
            codec = stream.codec_context
            return VideoHeader(int(codec.width), int(codec.height), duration)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise DecodeError(path, _short_reason(err)) from None
