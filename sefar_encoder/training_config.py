"""The encoder training's configuration (``scripts/train_encoder.py``) and what follows from it alone: the
list files it names, the steps per epoch, the batch split, and the model it builds.

    cfg = load_config(EncoderTrainConfig, "configs/encoder/synthgym_tiny.yaml", ["optim.lr=0.01"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import ListFileError, read_list
from sefar_encoder.frame_cache import FrameCache
from sefar_encoder.frame_tokens import FrameTokenCache
from sefar_encoder.loader import DataConfig, split_paths
from sefar_encoder.methods import MethodConfig, ResolvedMethod
from sefar_encoder.model.encoder import EncoderPreprocessing, ModelConfig, SeFAREncoder
from sefar_encoder.model.image_vit import checkpoint_normalisation, load_image_vit
from sefar_encoder.optim import OptimConfig
from sefar_encoder.runtime.config import ConfigError
from sefar_encoder.transforms import AugmentConfig, scaled_jitter_range


@dataclass
class EvalConfig:
    batch_size: int = field(default=32, metadata={"help": "clips per evaluation batch"})
    every: int = field(default=1, metadata={"help": "validate every N epochs (and after the last)"})
    teacher: bool = field(default=True, metadata={"help": "also evaluate the EMA teacher; best of both kept"})


@dataclass
class EncoderTrainConfig:
    out_dir: str = field(default="runs/encoder", metadata={"help": "run directory"})
    seed: int = field(default=0, metadata={"help": "model initialisation and step randomness"})
    epochs: int = field(default=30, metadata={"help": "total epochs E (same for every method)"})
    steps_per_epoch: int = field(
        default=0, metadata={"help": "optimizer steps per epoch; 0 = one pass over the unlabeled pool"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    num_frames: int = field(default=8, metadata={"help": "frames per clip (all views together)"})
    init_checkpoint: str | None = field(
        default=None, metadata={"help": "image ViT weights (local .safetensors/.pth or timm/hub id)"}
    )
    frame_token_cache: str | None = field(
        default=None,
        metadata={
            "help": "freeze the per-frame stem (model.frame_blocks > 0) and cache its tokens in this folder: "
            "many more steps per minute, spatial augmentation reduced to mirroring (sefar_encoder.frame_tokens)"
        },
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="no", metadata={"help": "mixed precision on CUDA (CPU runs in fp32)"}
    )
    deterministic: bool = field(default=False, metadata={"help": "torch deterministic algorithms"})
    max_nonfinite_steps: int = field(
        default=5, metadata={"help": "stop after this many non-finite losses in a row"}
    )
    keep_checkpoints: int = field(default=1, metadata={"help": "epoch checkpoints kept on disk"})
    log_every_step: bool = field(
        default=False, metadata={"help": "also write each optimizer step's loss and lr to steps.jsonl"}
    )
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Settings a resumed run may change: they do not alter what is computed. (Not data.cache_dir: cached
# frames are resized to data.cache_short_side, so clips larger than that give other pixels.)
RESUME_MAY_DIFFER = frozenset({"progress", "keep_checkpoints", "data.num_workers"})


def check_lists(cfg: EncoderTrainConfig, splits: Sequence[str]) -> None:
    """Fail first, naming the file, when a list file of the data set folder is missing (a data set that
    was never made, or a wrong ``data.root`` / ``data.label_rate``)."""
    paths = split_paths(cfg.data.root, cfg.data.label_rate)
    for name in splits:
        path = getattr(paths, name)
        if not path.is_file():
            raise ListFileError(
                f"{path}: list file not found (data.root={cfg.data.root!r}, data.label_rate="
                f"{cfg.data.label_rate}); the config's header says how to make the data set folder"
            )


def unlabeled_pool(cfg: EncoderTrainConfig, method: ResolvedMethod, datasets: dict[str, Any]) -> int:
    """The number of unlabeled clips (:func:`optimizer_steps_per_epoch` counts its steps from it). A
    method that never reads them gets the labeled set as its unlabeled stream: the lock-step loader needs
    one."""
    if method.uses_unlabeled:
        if len(datasets["unlabel"]) == 0:
            raise ConfigError(
                f"method.name={cfg.method.name} needs unlabeled clips, but the unlabeled list of "
                f"data.label_rate={cfg.data.label_rate} is empty; train method.name=supervised instead"
            )
        return len(datasets["unlabel"])
    unlabel_list = split_paths(cfg.data.root, cfg.data.label_rate).unlabel
    datasets["unlabel"] = datasets["train"]
    return len(read_list(unlabel_list)) if unlabel_list.is_file() else 0


def check_batch_split(cfg: EncoderTrainConfig, processes: int) -> None:
    """The global batch ``data.batch_size`` must split into ``grad_accum`` micro-batches per process."""
    micro = cfg.data.batch_size // (cfg.grad_accum * processes)
    if micro * cfg.grad_accum * processes != cfg.data.batch_size:
        raise ConfigError(
            f"data.batch_size ({cfg.data.batch_size}) must be divisible by grad_accum x processes "
            f"({cfg.grad_accum} x {processes})"
        )


def optimizer_steps_per_epoch(cfg: EncoderTrainConfig, num_labeled: int, num_unlabeled: int) -> int:
    """``cfg.steps_per_epoch``, else one pass over the unlabeled pool in steps of ``ratio x B_l`` clips —
    counted from the list even for methods that never read it, so every method trains for as many steps
    (with no unlabeled clips at all, e.g. 100 % labels: one pass over the labeled clips)."""
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    if num_unlabeled:
        return max(1, num_unlabeled // (cfg.data.unlabeled_ratio * cfg.data.batch_size))
    return max(1, num_labeled // cfg.data.batch_size)


def build_model(
    cfg: EncoderTrainConfig, hierarchy: Hierarchy, views: tuple[int, ...]
) -> tuple[SeFAREncoder, Any]:
    """The encoder for ``hierarchy``'s classes and the method's ``views``, initialised from
    ``init_checkpoint`` when set; returns it with the initialisation report (None without one).

    Its :attr:`~SeFAREncoder.preprocessing` (the export's ``preprocessing.json``) records the input
    statistics of those image weights (their timm ``pretrained_cfg``; ``data.augment.mean/std`` when they
    carry none, see :func:`checkpoint_normalisation`) and what it is trained on; :func:`model_data_config`
    makes the data pipeline normalise with them."""
    mcfg = dataclasses.replace(
        cfg.model, views=views, num_classes=hierarchy.num_classes, img_size=cfg.data.image_size
    )
    norm = checkpoint_normalisation(cfg.init_checkpoint, cfg.data.augment.mean, cfg.data.augment.std)
    preprocessing = EncoderPreprocessing.for_config(
        mcfg,
        mean=norm.mean,
        std=norm.std,
        data_root=cfg.data.root,
        label_rate=cfg.data.label_rate,
        init_checkpoint=norm.checkpoint,
        normalisation=norm.source,
    )
    model = SeFAREncoder(
        mcfg, class_names=hierarchy.names, hierarchy=hierarchy.to_json(), preprocessing=preprocessing
    )
    report = load_image_vit(model, cfg.init_checkpoint) if cfg.init_checkpoint else None
    return model, report


def model_data_config(cfg: EncoderTrainConfig, model: SeFAREncoder, perturb: str) -> DataConfig:
    """``cfg.data`` for ``model``: its views, the method's temporal perturbation ``perturb``, and the
    normalisation its preprocessing records (the image weights', which may differ from
    ``data.augment.mean/std``)."""
    pre = model.preprocessing
    augment = dataclasses.replace(cfg.data.augment, temporal_perturb=perturb, mean=pre.mean, std=pre.std)
    return dataclasses.replace(cfg.data, views=model.config.views, augment=augment)


def frame_token_cache(
    cfg: EncoderTrainConfig, model: SeFAREncoder, augment: AugmentConfig
) -> FrameTokenCache:
    """Freeze ``model``'s per-frame stem and return the token cache of it (entries not built yet)."""
    if cfg.model.frame_blocks < 1:
        raise ConfigError(
            "frame_token_cache needs a per-frame stem to cache: set model.frame_blocks (e.g. 2 of 4 blocks)"
        )
    model.freeze_frame_stem()
    frames = None
    if cfg.data.cache_dir:  # the frame cache the datasets use (same short side), so clips are decoded once
        short = cfg.data.cache_short_side or scaled_jitter_range(cfg.data.image_size, augment)[1]
        frames = FrameCache(cfg.data.cache_dir, short)
    return FrameTokenCache(
        cfg.frame_token_cache,
        model,
        cfg.data.image_size,
        augment,
        frame_cache=frames,
        backend=cfg.data.backend,
    )
