"""Pointers into docs/DESIGN.md (``DESIGN.md §<heading>`` and ``DESIGN.md#<anchor>``) name sections that exist,
and nothing cites the specification the toolkit was first written from (not part of the repository)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

DESIGN = REPO / "docs" / "DESIGN.md"
SOURCES = ("gym_qa", "sefar_encoder", "mllm", "scripts", "tests", "configs", "docs")
SUFFIXES = {".py", ".md", ".yaml", ".yml"}


def headings() -> list[str]:
    return [line.lstrip("#").strip() for line in DESIGN.read_text().splitlines() if line.startswith("#")]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def source_files() -> list[Path]:
    found = [REPO / "README.md"]
    for top in SOURCES:
        found += [p for p in sorted((REPO / top).rglob("*")) if p.suffix in SUFFIXES and p.is_file()]
    return found


def files_pointing_at_design() -> list[Path]:
    return [p for p in source_files() if "DESIGN.md" in p.read_text(encoding="utf-8") or p == DESIGN]


def section_pointers(path: Path) -> list[str]:
    """The text after each ``§`` that points into DESIGN.md, line breaks and comment markers joined
    (``§<heading>``, the notation itself, is not a pointer)."""
    text = re.sub(r"\s*\n[\s#]*", " ", path.read_text(encoding="utf-8"))
    prefix = r"§" if path == DESIGN else r"DESIGN\.md §"
    return [m.group(1) for m in re.finditer(prefix + r"(\w.{0,80})", text)]


def test_headings_are_unique():
    names = headings()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("path", files_pointing_at_design(), ids=lambda p: str(p.relative_to(REPO)))
def test_pointers_name_a_section(path: Path):
    names = sorted(headings(), key=len, reverse=True)  # longest first: "Losses" before "Loss"
    for pointer in section_pointers(path):
        assert any(
            pointer.startswith(name) and not pointer[len(name) : len(name) + 1].isalnum() for name in names
        ), f"{path.relative_to(REPO)}: no DESIGN.md section for §{pointer!r}"
    anchors = {anchor(name) for name in names}
    for target in re.findall(r"DESIGN\.md#([\w\-]+)", path.read_text(encoding="utf-8")):
        assert target in anchors, f"{path.relative_to(REPO)}: no DESIGN.md anchor #{target}"


def test_nothing_cites_the_old_specification():
    cited = [
        f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}"
        for path in source_files()
        if path != Path(__file__)
        for text in [path.read_text(encoding="utf-8")]
        # \s: also across a line break; [S]: a grep of the tree for the word finds real citations only
        for m in re.finditer(r"\b[S]PEC\s*§|\b[S]PEC \d", text)
    ]
    assert not cited, f"cite docs/DESIGN.md instead: {cited}"
