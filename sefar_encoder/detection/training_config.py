"""The detector trainer's configuration (``scripts/train_detector.py``), in the toolkit's one config system
(``sefar_encoder.runtime.config``): defaults here, a YAML merged in, ``key.sub=value`` overrides.

The training defaults are the official FineGym settings (HAAN's ``config/fine_gym.toml``: 200 epochs,
2 routines a batch, Adam at 3e-5, k-means on 10 % of the windows every 5 epochs); its MLP widths were
2048, I3D's feature width, where ``model.hidden_dim``/``embed_dim`` default to 512 for SeFAR's narrower
features."""

from __future__ import annotations

from dataclasses import dataclass, field

from sefar_encoder.detection.haan import HAANConfig
from sefar_encoder.detection.inference import InferenceConfig


@dataclass
class DetectorTrainConfig:
    routines: str = field(default="", metadata={"help": "routines JSON (gym_qa.routine_annotations format)"})
    features: str = field(
        default="",
        metadata={"help": "feature folder of those routines (scripts/extract_routine_features.py)"},
    )
    out_dir: str = field(default="runs/detector", metadata={"help": "run folder"})
    train_subset: str = field(default="training", metadata={"help": "subset the detector trains on"})
    val_subset: str = field(default="validation", metadata={"help": "subset that picks the best epoch"})
    test_subset: str = field(
        default="testing", metadata={"help": "subset evaluated once with the best epoch ('' = none)"}
    )
    model: HAANConfig = field(default_factory=HAANConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    epochs: int = field(default=200, metadata={"help": "passes over the training routines"})
    batch_size: int = field(default=2, metadata={"help": "routines per step"})
    lr: float = field(default=3e-5, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    recluster_every: int = field(default=5, metadata={"help": "k-means on the embeddings every N epochs"})
    cluster_sample: float = field(
        default=0.1, metadata={"help": "fraction of the training windows k-means is fitted on"}
    )
    kmeans_iterations: int = field(default=50, metadata={"help": "Lloyd iterations at most"})
    eval_every: int = field(
        default=1, metadata={"help": "validation mAP every N epochs (and after the last)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    keep_checkpoints: int = field(default=1, metadata={"help": "checkpoints kept on disk"})
    max_nonfinite_steps: int = field(default=5, metadata={"help": "stop after N non-finite losses in a row"})


# Settings a resumed run may change: they do not alter the trained weights.
RESUME_MAY_DIFFER = frozenset({"progress", "keep_checkpoints"})
