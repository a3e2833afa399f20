"""Shared fixtures. Tests build their own tiny data; nothing is downloaded."""

import os

# Keep tests reproducible and light on this 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
