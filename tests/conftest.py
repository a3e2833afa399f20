"""Shared fixtures. Tests build their own tiny data; nothing is downloaded.

``FINEGYM_DIR`` is the packaged copy of FineGym's public metadata (category lists, element lists, Qtree,
the official Gym-QA sample; ``gym_qa/data/finegym/``), so every test that reads it runs wherever the
package is installed. Tests import it from here (``from conftest import FINEGYM_DIR``: pytest puts
``tests/`` on ``sys.path``).
"""

import os

from gym_qa.finegym import metadata_path

# Keep tests reproducible and light on this 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FINEGYM_DIR = metadata_path("gym99_categories.txt").parent
