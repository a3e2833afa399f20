"""FineGym ingestion: an element list plus a folder of trimmed clips → a list file and a missing-clip report.

Element lists (``gym99_train_element_v1.1.txt`` …) hold one ``<clip_id> <Clabel>`` per line, where a
FineGym clip id reads ``<YouTubeID>_E_<start>_<end>_A_<start>_<end>`` (event span in the video, action
span inside the event, in seconds). Plain ids (SynthGym's element list) are accepted too. FineGym videos
are not redistributable, so users bring their own trimmed clips (``<clip_id>.mp4`` or another video
extension); ingestion lists the ones present and reports the ones missing, instead of failing late in
a data loader.

FineGym's public metadata (category and set lists, element lists, the Qtree, the official Gym-QA format
sample) ships with the package in ``gym_qa/data/finegym/`` (its README gives the source);
:func:`metadata_path` finds a file there, so scripts and tests need no copy of FineGym outside the
installed package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gym_qa.clips import VIDEO_EXTENSIONS, clip_id_of, index_clips
from gym_qa.lists import ListFileError, parse_list_lines, write_list

_FINEGYM_ID_RE = re.compile(r"(?P<video>.+)_E_(\d+)_(\d+)_A_(\d+)_(\d+)")


def metadata_path(name: str) -> Path:
    """The packaged copy of a FineGym metadata file, e.g. ``metadata_path("gym99_categories.txt")``.

    Raises :class:`FileNotFoundError` naming the files that are packaged when ``name`` is not one of them.
    """
    # setuptools installs the package as plain files (wheel or editable), so the resource is a real path
    # that can be handed to the parsers, shown in --help and written into commands.
    path = Path(str(resources.files("gym_qa") / "data" / "finegym" / name))
    if not path.is_file():
        packaged = sorted(p.name for p in path.parent.iterdir() if p.suffix in (".txt", ".json"))
        raise FileNotFoundError(
            f"{name}: not a packaged FineGym metadata file (packaged: {', '.join(packaged)})"
        )
    return path


@dataclass(frozen=True)
class ElementClip:
    """One line of an element list."""

    clip_id: str
    label: int
    line: int  # 1-based line in the element list
    video_id: str | None = None  # YouTube id, for FineGym-style ids
    event_span: tuple[int, int] | None = None  # event start/end in the video
    action_span: tuple[int, int] | None = None  # action start/end inside the event


def parse_clip_id(clip_id: str) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    """Split a FineGym clip id into (YouTube id, event span, action span); ``None`` for other ids."""
    m = _FINEGYM_ID_RE.fullmatch(clip_id)
    if not m:
        return None
    return m.group("video"), (int(m.group(2)), int(m.group(3))), (int(m.group(4)), int(m.group(5)))


def read_element_list(path: str | Path, num_classes: int | None = None) -> list[ElementClip]:
    """Parse an element list; malformed lines and duplicate clip ids raise :class:`ListFileError`.

    The grammar is the list-file grammar (``<id> <label>``, CRLF, blank lines, ``#`` comments), so the
    same parser and error messages serve both.
    """
    path = Path(path)
    if not path.is_file():
        raise ListFileError(f"{path}: element list not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ListFileError(f"{path}: not a UTF-8 text file ({err})") from None
    clips: list[ElementClip] = []
    first_line: dict[str, int] = {}
    for entry in parse_list_lines(text, str(path), path.parent, num_classes):
        clip_id = entry.raw_path
        if clip_id in first_line:
            raise ListFileError(
                f"{path}:{entry.line}: clip {clip_id} already listed at line {first_line[clip_id]}"
            )
        first_line[clip_id] = entry.line
        parsed = parse_clip_id(clip_id)
        video_id, event_span, action_span = parsed if parsed else (None, None, None)
        clips.append(ElementClip(clip_id, entry.label, entry.line, video_id, event_span, action_span))
    return clips


@dataclass
class IngestResult:
    """Clips found (path, label) in element-list order, and the element-list lines with no clip file."""

    present: list[tuple[Path, int]]
    missing: list[ElementClip]

    @property
    def total(self) -> int:
        return len(self.present) + len(self.missing)


def ingest(
    element_list: str | Path,
    clips_dir: str | Path,
    num_classes: int | None = None,
    recursive: bool = False,
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
) -> IngestResult:
    """Match an element list against a clip folder (``<clip_id><ext>``, ext from ``extensions``)."""
    clips = read_element_list(element_list, num_classes)
    files = index_clips(clips_dir, recursive=recursive, extensions=extensions)
    present: list[tuple[Path, int]] = []
    missing: list[ElementClip] = []
    for clip in clips:
        # An element list may name a clip by a relative path ("sub/clip"); the file index is by name.
        found = files.get(clip_id_of(clip.clip_id, extensions))
        if found is None:
            missing.append(clip)
        else:
            present.append((found.resolve(), clip.label))
    return IngestResult(present=present, missing=missing)


def write_ingest_outputs(
    result: IngestResult, out_list: str | Path, missing_file: str | Path | None = None, relative: bool = True
) -> None:
    """Write the list file of present clips and, when given, the missing clips as an element list.

    The missing-clip file is itself a valid element list (``<clip_id> <label>``, with a ``#`` header
    giving the count), so it can be fed back to a download tool or to :func:`read_element_list`.
    """
    write_list(out_list, result.present, relative=relative)
    if missing_file is not None:
        missing_file = Path(missing_file)
        missing_file.parent.mkdir(parents=True, exist_ok=True)
        header = f"# {len(result.missing)} of {result.total} clips missing\n"
        body = "".join(f"{clip.clip_id} {clip.label}\n" for clip in result.missing)
        missing_file.write_text(header + body, encoding="utf-8")
