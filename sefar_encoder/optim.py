"""The encoder's optimizer and learning-rate schedule (docs/DESIGN.md §Optimiser).

SGD with Nesterov momentum 0.9, lr 5e-3, x0.1 at 25/30 and 28/30 of training (the paper's recipe), or
AdamW with linear warm-up and cosine decay for small CPU runs. Weight decay applies to weight matrices
only: a model's ``no_weight_decay()`` names the norms, biases and embeddings it exempts. Optional
layer-wise learning-rate decay (as in BEiT / MAE fine-tuning): a model's ``layer_id(name)`` places each
parameter at a depth 0..L+1 (embeddings 0, block i at i + 1, the head L + 1) and its lr is scaled by
``layer_decay ** (L + 1 - depth)``, so a pretrained backbone moves less than the new head. Parameters no
image checkpoint provides (the SeFAR encoder's temporal ones) are new like the head and sit at its depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from sefar_encoder.runtime.config import ConfigError


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = field(default="sgd", metadata={"help": "sgd (paper) or adamw (+cosine)"})
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=True, metadata={"help": "SGD Nesterov momentum"})
    weight_decay: float = field(default=1e-3, metadata={"help": "not applied to norms, biases, embeddings"})
    milestones: tuple[float, ...] = field(
        default=(25 / 30, 28 / 30), metadata={"help": "sgd: lr x0.1 at these fractions of training"}
    )
    warmup_fraction: float = field(default=0.0, metadata={"help": "adamw: linear warm-up fraction"})
    grad_clip: float = field(default=0.0, metadata={"help": "max gradient norm; 0 = no clipping"})
    layer_decay: float = field(
        default=1.0,
        metadata={
            "help": "lr x layer_decay^(L + 1 - depth): embeddings depth 0, block i i + 1, head and temporal "
            "parameters L + 1; 1 = off"
        },
    )


def build_optimizer(
    cfg: OptimConfig, model: torch.nn.Module, extra: list[torch.nn.Module]
) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only (not norms, biases, embeddings: docs/DESIGN.md §Optimiser);
    one parameter group per (lr scale, decay) pair, the scale in each group's ``lr_scale`` (read by
    :func:`set_lr`)."""
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise ConfigError(f"optim.layer_decay must be in (0, 1], got {cfg.layer_decay}")
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for module in [model, *extra]:
        skip = module.no_weight_decay()
        for name, p in module.named_parameters():
            if p.requires_grad:
                scale = cfg.layer_decay ** (module.num_layers + 1 - module.layer_id(name))  # 1 when off
                groups.setdefault((scale, name not in skip), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
        for (scale, decay), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def lr_factor(cfg: OptimConfig, step: int, total: int) -> float:
    """SGD: step decay x0.1 at each milestone fraction; AdamW: linear warm-up then cosine to 0."""
    if cfg.name == "sgd":
        return 0.1 ** sum(step >= m * total for m in cfg.milestones)
    warm = int(cfg.warmup_fraction * total)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, total: int) -> float:
    lr = cfg.lr * lr_factor(cfg, step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
