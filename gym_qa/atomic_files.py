"""Atomic file writes, the toolkit's one implementation (torch-free, so ``gym_qa`` can use it): a file is
written under a temporary name in its folder and renamed over the final name (``os.replace`` is atomic on
POSIX), so a reader or a killed run sees the old file or the new one, never half of one.

    write_text_atomic(path, text)                 # UTF-8, bytes exactly as given (no newline translation)
    with atomic_replace(path) as tmp:             # any writer that takes a path
        fig.savefig(tmp, format="png")
    with atomic_replace(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)                         # np.save given a path would append ".npy" to it

The temporary name ``<name>.<pid>.tmp`` is unique per process, so processes that write the same file at
once (DataLoader workers filling a cache) never share one, and it ends in ``.tmp``, the suffix the
run-folder repair after a kill removes (``sefar_encoder.runtime.atomic.repair_run_dir``). It keeps no
file extension: a writer that infers the format from the name must be told the format. A folder may be
built at the temporary path too (a copied checkpoint); the final name must not hold a full folder by then.

``durable=True`` also fsyncs the file before the rename and its folder after it, so the new file survives
a power cut: what a run resumes from (checkpoints, metrics, configs) is written so, through
``sefar_encoder.runtime.atomic``. Data sets, question files and caches, which a rerun rewrites, skip it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_replace(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally what was written there
    replaces ``path`` (fsynced first when ``durable``), when it raises the temporary file (or folder) is
    removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        tmp.replace(path)
        if durable:
            fsync_dir(path.parent)
    finally:  # only still there when the write failed
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` as UTF-8 through :func:`atomic_replace`."""
    with atomic_replace(path, durable) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
