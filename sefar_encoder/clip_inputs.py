"""What to predict: the clips named by a folder, a video file or a list file (``scripts/predict.py
--inputs``, the demo's ``--examples``).

    read_inputs("clips/")          # [ClipInput(path, label=None), ...]: the folder's video files, sorted
    read_inputs("test.csv")        # "<path>" or "<path> <label>" lines: ClipInput(path, label)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gym_qa.clips import VIDEO_EXTENSIONS


class InputError(ValueError):
    """The inputs cannot be listed (missing folder or list file, malformed list line, nothing to predict)."""


@dataclass(frozen=True)
class ClipInput:
    """A clip to predict; ``label`` is its known class, when a labeled list file gave one."""

    path: Path
    label: int | None = None


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def read_inputs(source: str | os.PathLike, recursive: bool = False) -> list[ClipInput]:
    """The clips named by ``source``: a folder (its video files, sorted), a video file, or a list file.

    A list file holds one clip per line: ``<path>`` or ``<path> <label>`` (the SeFAR list format),
    paths absolute or relative to the list's folder; blank lines and ``#`` comments are skipped, CRLF
    accepted. Missing or unreadable clips are NOT checked here: they become
    :class:`~sefar_encoder.prediction.PredictionFailure` records when predicted. Raises :class:`InputError`
    for a missing source, a malformed line or nothing to predict.
    """
    source = Path(source)
    if source.is_dir():
        candidates = source.rglob("*") if recursive else source.iterdir()
        clips = [ClipInput(p) for p in sorted(candidates) if p.is_file() and is_video_file(p)]
        if not clips:
            extensions = ", ".join(VIDEO_EXTENSIONS)
            raise InputError(f"{source}: no video files ({extensions}) in this folder")
        return clips
    if not source.is_file():
        raise InputError(f"{source}: no such folder, video or list file")
    if is_video_file(source):
        return [ClipInput(source)]
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: neither a video file nor a UTF-8 list file") from None
    base = source.parent.resolve()
    clips = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 1:
            path_str, label = parts[0], None
        elif len(parts) == 2 and parts[1].isdigit():
            path_str, label = parts[0], int(parts[1])
        else:
            raise InputError(f"{source}:{lineno}: expected '<path>' or '<path> <label>', got {raw!r}")
        path = Path(path_str)
        clips.append(ClipInput(path if path.is_absolute() else Path(os.path.normpath(base / path)), label))
    if not clips:
        raise InputError(f"{source}: the list names no clips")
    return clips
