"""Durable atomic writes for run folders, and the clean-up of a run folder after a kill.

A file a run resumes from is written whole or not at all, and survives a power cut: through
``gym_qa.atomic_files`` (the one implementation of "write under a temporary name, rename over the final
one") with ``durable=True``, which fsyncs the file before the rename and the folder after it. The
temporary names the toolkit's writers use, which :func:`repair_run_dir` recognises after a kill::

    <name>.<pid>.tmp         a file being written (gym_qa.atomic_files, this module)
    .tmp-<name>/             a checkpoint folder being written, or one moved aside (runtime.checkpoint,
                             runtime.lifecycle)
    .<name>.tmp-<random>/    an export folder being written (SeFAREncoder / MultimodalModel.save_pretrained)
    .<name>.old-<random>/    the previous export, renamed aside until the new one is in place
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gym_qa import atomic_files

TMP_PREFIX = ".tmp-"
_ASIDE = re.compile(r"\.(?P<name>.+)\.old-[^/]+")


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary path next to ``path``, then move the result into place, durably."""
    with atomic_files.atomic_replace(path, durable=True) as tmp:
        write(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    atomic_files.write_text_atomic(path, text, durable=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


def repair_run_dir(run_dir: str | Path) -> list[Path]:
    """Repair a run folder after a kill; returns what was removed. Call it only when no writer of the run
    is alive (on ``--resume``), after ``runtime.checkpoint.clean_stale``.

    An export replaced by rename-aside (``save_pretrained``) and caught between its two renames has no
    ``<name>/`` left, only the complete ``.<name>.old-*/``: that one is renamed back. Then the temporaries
    of interrupted writes are removed, anywhere under ``run_dir``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    for aside in sorted(p for p in run_dir.rglob(".*.old-*") if p.is_dir()):
        final = aside.parent / _ASIDE.fullmatch(aside.name)["name"]
        if aside.exists() and not final.exists():
            aside.rename(final)
    removed = []
    for p in sorted(run_dir.rglob("*"), key=lambda q: len(q.parts)):  # parents first
        hidden_tmp = p.name.startswith(".") and (TMP_PREFIX in p.name or ".old-" in p.name)
        if p.exists() and (hidden_tmp or p.name.endswith(".tmp")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
    return removed
