"""The command line of the scripts that predict from clips: ``scripts/predict.py`` and ``scripts/demo.py``."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 1  # argparse's own 2 means "some clips could not be read" to scripts/predict.py


class Exit1ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error exits with :data:`EXIT_USAGE` (1) instead of 2: ``scripts/predict.py``
    exits 2 when some clips could not be read, and both scripts exit 1 for usage and model errors alike."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
