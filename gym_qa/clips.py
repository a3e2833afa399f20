"""Clip files: which extensions count as videos, clip ids, indexing a folder of clips, frame counts, and
the clips of a list file as the question generator reads them (:class:`Clip`, :func:`clips_from_list`).

A *clip id* is a file name without its video extension (FineGym: ``<ytid>_E_<s>_<e>_A_<s>_<e>``); it
is the ``video`` field of Gym-QA records and the first column of element lists. Frame counts use PyAV
(no torch, no external binary), imported lazily because only the question generator needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gym_qa.lists import read_list

# Lower-case extensions, in order of preference when one clip exists in several containers.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg")


class ClipError(ValueError):
    """A clip folder is missing or a clip file cannot be read; the message names the path."""


def clip_id_of(path: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> str:
    """The clip id of a path: its name without a video extension (one of ``extensions``, any case).

    The one definition of a clip id (lists, Gym-QA's ``video`` field, the feature cache, the demo). Only
    video extensions are stripped, so a bare FineGym id from an element list (no extension) is returned
    unchanged even if it happened to contain a dot: ``Path.stem`` would cut ``"a.b"`` to ``"a"``.
    """
    path = Path(path)
    return path.stem if path.suffix.lower() in extensions else path.name


def index_clips(
    folder: str | Path, recursive: bool = False, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> dict[str, Path]:
    """Map clip id → file for the video files in ``folder``.

    When one id exists with several extensions, the earliest in ``extensions`` wins (deterministic,
    independent of directory listing order).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipError(f"{folder}: clip folder not found")
    rank = {ext: i for i, ext in enumerate(extensions)}
    found: dict[str, Path] = {}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(candidates):
        ext = path.suffix.lower()
        if ext not in rank or not path.is_file():
            continue
        clip_id = clip_id_of(path, extensions)
        if clip_id not in found or rank[ext] < rank[found[clip_id].suffix.lower()]:
            found[clip_id] = path
    return found


def count_frames(path: str | Path) -> int:
    """Number of video frames in a clip file, via PyAV.

    The container's frame count is used when it has one (MP4 does); otherwise video packets are
    counted, which needs no decoding. Unreadable files raise :class:`ClipError`.
    """
    import av  # lazy: PyAV is only needed when clip files are actually present

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as err:
        raise ClipError(f"{path}: cannot read video ({err})") from None


@dataclass(frozen=True)
class Clip:
    """What the question generator needs to know about one clip."""

    video: str  # clip id without extension (the record's ``video``)
    label: int
    frame_length: int = 0


def clips_from_list(
    path: str | Path, num_classes: int | None = None, clips_dir: str | Path | None = None
) -> list[Clip]:
    """Clips of a list file or element list (same grammar: ``<path or clip id> <label>``).

    ``frame_length`` is read with PyAV from the clip file when it exists (the listed path, or
    ``<clips_dir>/<clip_id>.<ext>``); otherwise it is 0, e.g. for FineGym element lists without videos.
    """
    entries = read_list(path, num_classes)
    files = index_clips(clips_dir) if clips_dir is not None else {}
    clips = []
    for entry in entries:
        video = clip_id_of(entry.raw_path)
        file = entry.path if entry.path.is_file() else files.get(video)
        frames = count_frames(file) if file is not None else 0
        clips.append(Clip(video=video, label=entry.label, frame_length=frames))
    return clips
