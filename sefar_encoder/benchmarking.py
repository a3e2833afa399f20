"""What every benchmark shares besides the machine description (``sefar_encoder.runtime.machine``):
printing (and optionally saving) the result JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], json_out: Path | None) -> dict[str, Any]:
    """Print ``result`` as JSON and also write it to ``json_out`` when given; returns ``result``."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    return result
