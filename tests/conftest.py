"""Shared test setup. Tests build their own tiny data; nothing is downloaded.

Fixtures live in ``*_fixtures.py`` modules; a test module registers the ones it uses as plugins, once per
session, with ``pytest_plugins = ["tiny_llm_fixtures", ...]`` (never by importing a fixture function by
name, which registers a second copy in that module). A module lists every fixture module it uses, so it
passes when run alone, and only those, so a test of the torch-free ``gym_qa`` does not pay for importing
the LLM stack. Plain helpers (functions, constants) are imported by name as usual; pytest puts ``tests/``
on ``sys.path``.

From this module (``from conftest import FINEGYM_DIR, REPO, SCRIPTS, load_script``), the one definition
of each:

- ``REPO``, ``SCRIPTS``: the repository and its ``scripts/`` folder;
- ``FINEGYM_DIR``: the packaged copy of FineGym's public metadata (category lists, element lists, Qtree,
  the official Gym-QA sample; ``gym_qa/data/finegym/``), so every test that reads it runs wherever the
  package is installed;
- :func:`load_script`: the one way tests import an entry point of ``scripts/`` (libraries never do).
"""

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gym_qa.finegym import metadata_path

# A test module imports a fixture module's helpers before pytest registers it as a plugin, so mark them all
# for assertion rewriting now, while none is imported yet.
pytest.register_assert_rewrite(*(p.stem for p in Path(__file__).parent.glob("*_fixtures.py")))

# Keep tests reproducible and light on this 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
FINEGYM_DIR = metadata_path("gym99_categories.txt").parent

# An entry point imports a sibling one by its module name (``import train_mllm``): Python puts scripts/ on
# sys.path when it runs a script. Tests import scripts the same way, so scripts/ goes on the path here too
# (last: it never shadows an installed module).
sys.path.append(str(SCRIPTS))


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as module ``name`` (scripts are not a package), as a sibling script would:
    one copy per session, so every test module and every script shares a script's module state."""
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == SCRIPTS, f"module {name} is {module.__file__}, not a script"
    return module
