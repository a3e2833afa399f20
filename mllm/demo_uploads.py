"""What the demo accepts and serves: its limits, its private folders, the checks an upload passes before
any decoder opens it, and the example clips (see :mod:`mllm.demo_app` for why each rule exists).

    dirs = AppDirs.create()                      # private upload/cache + examples folders (before the UI)
    path, duration = check_upload(video, DemoLimits())   # gr.Error with a short message otherwise
    examples = copy_examples(read_inputs("data/synthgym-tiny/test.csv"), predictor, dirs.examples)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from gym_qa.hierarchy_files import EVENT_NAMES
from sefar_encoder.clip_inputs import ClipInput
from sefar_encoder.decoding import DecodeError, probe_header
from sefar_encoder.prediction import Predictor


@dataclass(frozen=True)
class DemoLimits:
    """Resource limits of the demo."""

    max_file_mb: float = 50.0  # largest upload, in MB (10^6 bytes)
    max_duration_s: float = 60.0  # longest clip accepted, in seconds (FineGym elements last a few)
    max_routine_duration_s: float = 120.0  # longest routine of the routine tab (FineGym's: 5-206 s)
    max_side: int = 4096  # largest frame width or height, in pixels (decoded frames are kept in memory)
    queue_size: int = 32  # requests waiting in the queue before new ones are turned away
    concurrency: int = 2  # encoder predictions running at once
    chat_concurrency: int = 1  # LLM generations / quiz answers running at once
    history_turns: int = 2  # earlier exchanges about the same clip given to the LLM
    delete_after_s: int = 3600  # uploads and generated files older than this are deleted (0: at shutdown)

    def __post_init__(self) -> None:
        if min(self.max_file_mb, self.max_duration_s, self.max_routine_duration_s, self.max_side) <= 0:
            raise ValueError(
                "max_file_mb, max_duration_s, max_routine_duration_s and max_side must be positive"
            )
        if self.delete_after_s < 0:
            raise ValueError(
                f"delete_after_s must be >= 0 (0: keep files until shutdown), got {self.delete_after_s}"
            )
        if self.queue_size < 20:
            raise ValueError(f"queue_size must be >= 20, got {self.queue_size}")
        if not 1 <= self.concurrency < self.queue_size or not 1 <= self.chat_concurrency < self.queue_size:
            raise ValueError("concurrency limits must be >= 1 and smaller than queue_size")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)

    @property
    def delete_cache(self) -> tuple[int, int] | None:
        """gradio's ``(frequency, age)`` in seconds: every min(10 min, age / 2), files older than
        ``delete_after_s`` are deleted (a file lives at most 1.5 x the age); None: never."""
        age = int(self.delete_after_s)
        return (max(1, min(600, age // 2)), age) if age else None


@dataclass(frozen=True)
class AppDirs:
    """The only folders the running app serves files from: ``temp`` (uploads, gallery images) and
    ``examples`` (copies of the example clips)."""

    root: Path
    temp: Path
    examples: Path

    @classmethod
    def create(cls, root: str | os.PathLike | None = None) -> AppDirs:
        """Make the folders (under a fresh temporary directory unless ``root`` is given) and point gradio's
        upload/cache folders at ``temp``. Call before building the demo: components read it when built."""
        base = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sefar-demo-"))
        dirs = cls(base.resolve(), (base / "gradio").resolve(), (base / "examples").resolve())
        dirs.temp.mkdir(parents=True, exist_ok=True)
        dirs.examples.mkdir(parents=True, exist_ok=True)
        os.environ["GRADIO_TEMP_DIR"] = str(dirs.temp)
        os.environ["GRADIO_EXAMPLES_CACHE"] = str(dirs.temp / "cached_examples")
        return dirs

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Example:
    """An example clip (inside :attr:`AppDirs.examples`), its true class if known, and a button title."""

    path: Path
    label: int | None
    title: str


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: how an uploaded copy of an example is recognised."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def video_container(path: str | os.PathLike) -> str | None:
    """The container a file's first bytes announce: "mp4" (ISO BMFF: MP4, MOV, M4V, 3GP), "matroska"
    (MKV, WebM), "avi", "mpeg" (MPEG program stream), or None for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x00\x00\x01\xba":  # MPEG-PS pack header
        return "mpeg"
    return None


def user_error(message: str) -> gr.Error:
    """A message for the visitor, without a traceback on the server's console (a user error, not a bug)."""
    return gr.Error(message, print_exception=False)


def check_upload(video: str | None, limits: DemoLimits, routine: bool = False) -> tuple[Path, float | None]:
    """The uploaded clip's path and duration (s, None if unknown) after the size, container and header
    checks (:func:`user_error` otherwise). The header is read without decoding; a file whose header cannot
    be read passes, and decoding reports it. ``routine``: a whole routine (the routine tab), whose
    duration limit is ``max_routine_duration_s`` instead of ``max_duration_s``."""
    if not video:
        raise user_error(
            "Upload a routine video first." if routine else "Upload a clip or pick an example first."
        )
    path = Path(video)
    if not path.is_file():
        raise user_error("The uploaded file is no longer available; please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise user_error("This file is empty (0 bytes). Please upload a video clip such as an .mp4 file.")
    if size > limits.max_file_bytes:
        raise user_error(
            f"This file is {size / 1e6:.1f} MB; the demo accepts clips up to {limits.max_file_mb:g} MB."
        )
    if video_container(path) is None:
        raise user_error(
            "This file is not a video clip. Please upload a video (.mp4, .mov, .mkv, .webm, .avi)."
        )
    try:
        header = probe_header(path)
    except DecodeError:
        return path, None
    what, longest, hint = (
        ("routine", limits.max_routine_duration_s, "Trim it to the part you want searched.")
        if routine
        else ("clip", limits.max_duration_s, "Trim it to the element you want recognised.")
    )
    if header.duration_s is not None and header.duration_s > longest:
        raise user_error(
            f"This {what} lasts {header.duration_s:.0f} s; the demo accepts {what}s up to {longest:g} s. "
            + hint
        )
    if max(header.width, header.height) > limits.max_side:
        raise user_error(
            f"This clip's frames are {header.width}x{header.height} pixels; the demo accepts up to "
            f"{limits.max_side} pixels on a side. Please upload a smaller video."
        )
    return path, header.duration_s


def copy_examples(
    clips: Sequence[ClipInput], predictor: Predictor, directory: str | os.PathLike, limit: int = 12
) -> list[Example]:
    """Copy up to ``limit`` clips into ``directory`` (one per class first, in class order, then the rest)
    and title them by event; clips that are missing or not videos are skipped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    usable = [c for c in clips if c.path.is_file() and c.path.stat().st_size > 0]
    first_of_class: dict[int, ClipInput] = {}
    for clip in usable:
        if clip.label is not None and 0 <= clip.label < predictor.num_classes:
            first_of_class.setdefault(clip.label, clip)
    ordered = [first_of_class[k] for k in sorted(first_of_class)]
    ordered += [c for c in usable if c not in ordered]
    examples = []
    for clip in ordered[:limit]:
        target = directory / clip.path.name
        if target.exists():  # two clips with one name (from different folders): keep both
            target = directory / f"{len(examples) + 1:02d}_{clip.path.name}"
        shutil.copyfile(clip.path, target)
        label = clip.label if clip.label is not None and 0 <= clip.label < predictor.num_classes else None
        event = predictor.element(label).event if label is not None else None
        where = f" · {EVENT_NAMES.get(event, event)}" if event else ""
        examples.append(Example(target, label, f"Example {len(examples) + 1}{where}"))
    return examples
