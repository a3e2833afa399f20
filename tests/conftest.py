"""Shared fixtures. Tests build their own tiny data; nothing is downloaded.

``FINEGYM_DIR`` is the one place the FineGym metadata folder (category lists, element lists, Qtree, the
official Gym-QA sample) is located: ``$SEFAR_FINEGYM_DIR`` if set, else ``../shared/finegym`` next to the
checkout. Tests that need a file from it import ``FINEGYM_DIR`` and ``needs_finegym`` from here
(``from conftest import ...``: pytest puts ``tests/`` on ``sys.path``) and skip, with the missing path as
the reason, when the file is absent.
"""

import os
from pathlib import Path

import pytest

# Keep tests reproducible and light on this 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# An empty SEFAR_FINEGYM_DIR counts as unset (Path("") would be the working directory).
FINEGYM_DIR = Path(
    os.environ.get("SEFAR_FINEGYM_DIR") or Path(__file__).resolve().parents[2] / "shared" / "finegym"
)


def needs_finegym(*names: str) -> pytest.MarkDecorator:
    """A skip marker: skip unless every file in ``names`` exists under ``FINEGYM_DIR``."""
    missing = [FINEGYM_DIR / name for name in names if not (FINEGYM_DIR / name).is_file()]
    reason = f"FineGym metadata absent: {missing[0]} (set SEFAR_FINEGYM_DIR)" if missing else ""
    return pytest.mark.skipif(bool(missing), reason=reason)
