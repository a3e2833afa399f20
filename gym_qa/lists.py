"""List files, the interchange format between data sets and training: one ``<path> <label>`` per line.

This is the format of SeFAR, SVFormer and MMAction2 video lists (docs/DESIGN.md §List files and splits).
CRLF line endings, blank lines and ``#`` comments are accepted; anything else malformed raises
:class:`ListFileError` naming the file and the line. Paths may be absolute or relative to the list file's
directory; :func:`read_list` returns them resolved. The parser lives here (not in ``sefar_encoder``)
because the Gym-QA generator, which must not import torch, reads the same lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gym_qa.atomic_files import write_text_atomic


class ListFileError(ValueError):
    """A list file is missing or has a malformed line; the message names the file and the line."""


@dataclass(frozen=True)
class ListEntry:
    path: Path  # resolved: absolute, or relative to the list's directory made absolute
    label: int
    line: int  # 1-based line number in the list file, for error messages
    raw_path: str  # the path as written in the file


def parse_list_lines(
    text: str, source: str, base_dir: Path, num_classes: int | None = None
) -> list[ListEntry]:
    entries = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise ListFileError(f"{source}:{lineno}: expected '<path> <label>', got {raw!r}")
        path_str, label_str = parts
        try:
            label = int(label_str)
        except ValueError:
            raise ListFileError(f"{source}:{lineno}: label {label_str!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise ListFileError(f"{source}:{lineno}: label {label} out of range {bound}")
        path = Path(path_str)
        resolved = path if path.is_absolute() else Path(os.path.normpath(base_dir / path))
        entries.append(ListEntry(path=resolved, label=label, line=lineno, raw_path=path_str))
    return entries


def read_list(path: str | Path, num_classes: int | None = None) -> list[ListEntry]:
    """Parse a list file; labels are range-checked against ``num_classes`` when given."""
    path = Path(path)
    if not path.is_file():
        raise ListFileError(f"{path}: list file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ListFileError(f"{path}: not a UTF-8 text file ({err})") from None
    return parse_list_lines(text, str(path), path.parent.resolve(), num_classes)


def write_list(path: str | Path, items: list[tuple[str | Path, int]], relative: bool = True) -> None:
    """Write ``<path> <label>`` lines; with ``relative`` paths are written relative to the list's folder
    (input paths are file-system paths: absolute, or relative to the working directory).

    Written to a temporary name and renamed, so a reader never sees half a list.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    lines = []
    for item_path, label in items:
        p = Path(item_path)
        if any(ch.isspace() for ch in str(p)):
            raise ListFileError(f"{path}: clip path {str(p)!r} contains white space, which lists cannot hold")
        if relative:
            # a relative input path means relative to the working directory, like any file path
            p = Path(os.path.relpath(p.resolve(), base))
        lines.append(f"{p.as_posix()} {int(label)}\n")
    write_text_atomic(path, "".join(lines))


def check_disjoint(**lists: list[ListEntry]) -> None:
    """Raise when two named lists share a clip (e.g. ``val`` and ``test``, or labeled and unlabeled)."""
    names = list(lists)
    seen: dict[Path, str] = {}
    for name in names:
        for entry in lists[name]:
            key = entry.path.resolve()
            if key in seen and seen[key] != name:
                raise ListFileError(f"clip {entry.raw_path} appears in both '{seen[key]}' and '{name}' lists")
            seen.setdefault(key, name)
