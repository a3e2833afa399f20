"""A trained detector on disk, like an encoder export: ``model.safetensors`` (HAAN's weights),
``config.json`` (its :class:`HAANConfig`), ``inference.json`` (its :class:`InferenceConfig`) and, last,
``detector.json`` (class names and sets, the coarse class of each class, the feature layout and encoder it
was trained on, its validation figures), whose presence marks a complete export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sefar_encoder.detection.haan import HAAN, HAANConfig
from sefar_encoder.detection.inference import InferenceConfig
from sefar_encoder.runtime.atomic import write_atomic, write_json_atomic
from sefar_encoder.runtime.config import ConfigError, load_config, to_dict

DETECTOR_META, DETECTOR_WEIGHTS = "detector.json", "model.safetensors"


def save_detector(directory: Path, model: HAAN, inference: InferenceConfig, meta: dict[str, Any]) -> None:
    """Weights first, then ``detector.json`` (with the model config added): the json marks a complete export."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomic(directory / DETECTOR_WEIGHTS, lambda tmp: save_file(weights, str(tmp)))
    write_json_atomic(directory / "config.json", to_dict(model.cfg))
    write_json_atomic(directory / "inference.json", to_dict(inference))
    write_json_atomic(directory / DETECTOR_META, {**meta, "coarse_of_class": model.coarse_of_class.tolist()})


def load_detector(directory: str | Path) -> tuple[HAAN, InferenceConfig, dict[str, Any]]:
    """The detector of an export (eval mode), its inference rule and its ``detector.json``."""
    directory = Path(directory)
    meta_path = directory / DETECTOR_META
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path}: not a detector export (scripts/train_detector.py writes one)")
    meta = json.loads(meta_path.read_text())
    cfg = load_config(HAANConfig, directory / "config.json")  # JSON is YAML: validated, typed
    inference = load_config(InferenceConfig, directory / "inference.json")
    model = HAAN(int(meta["features"]["feature_dim"]), list(meta["coarse_of_class"]), cfg)
    model.load_state_dict(load_file(str(directory / DETECTOR_WEIGHTS)), strict=True)
    return model.eval(), inference, meta


def detector_logits(model: HAAN, features: torch.Tensor) -> torch.Tensor:
    """Clip logits ``[T, C]`` of one routine's window features ``[T, D]`` (eval mode, no gradient)."""
    model.eval()
    with torch.no_grad():
        return model(features[None].float()).logits[0]
