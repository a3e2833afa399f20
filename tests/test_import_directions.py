"""The dependency direction of docs/DESIGN.md §Dependency direction: gym_qa <- sefar_encoder <- mllm, and
no library imports a script. Checked on the import statements of the source files (parsed, not executed:
function-level imports count too), plus one run of ``import gym_qa`` in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SCRIPTS

# What each library must never import (top-level module names); scripts are forbidden to all of them.
FORBIDDEN = {
    "gym_qa": {"torch", "sefar_encoder", "mllm"},
    "sefar_encoder": {"mllm"},
    "mllm": set(),
}
SCRIPT_MODULES = {"scripts"} | {p.stem for p in SCRIPTS.glob("*.py")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``path``; relative imports stay inside
    their own package and are left out."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_libraries_import_only_downwards(package: str):
    forbidden = FORBIDDEN[package] | SCRIPT_MODULES
    wrong = [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_scripts_import_the_installed_packages(script: str):
    """The packages are installed (``pip install -e .``): a script never edits ``sys.path`` to find them."""
    path = SCRIPTS / script
    edits = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr in {"insert", "append", "extend"}
        and ast.unparse(node.value) == "sys.path"
    ]
    assert not edits, f"scripts/{script}:{edits[0]}: edits sys.path"


def test_gym_qa_imports_without_torch():
    code = (
        "import sys, gym_qa, gym_qa.finegym, gym_qa.splits, gym_qa.reference_answerers;"
        "assert 'torch' not in sys.modules and 'av' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
