"""gym_qa's atomic writer: the new file (or folder) replaces the old one whole; a failed write leaves the old
one and no temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gym_qa.atomic_files import atomic_replace, write_text_atomic


def test_text_is_written_as_utf8_bytes_exactly(tmp_path: Path):
    path = tmp_path / "q.json"
    path.write_text("old")
    write_text_atomic(path, "salto \u00e0 l'envers\nno CRLF\n")
    assert path.read_bytes() == "salto \u00e0 l'envers\nno CRLF\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["q.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "sheet.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder died"), atomic_replace(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["sheet.png"]


def test_temporary_names_end_in_tmp_and_differ_by_process(tmp_path: Path):
    with atomic_replace(tmp_path / "clip.mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp") and str(os.getpid()) in tmp.name
        tmp.write_bytes(b"x")
    assert (tmp_path / "clip.mp4").read_bytes() == b"x"


def test_a_failed_folder_write_leaves_no_temporary_folder(tmp_path: Path):
    with pytest.raises(RuntimeError, match="copy died"), atomic_replace(tmp_path / "encoder") as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("copy died")
    assert list(tmp_path.iterdir()) == []
