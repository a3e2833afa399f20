"""The encoder's optimizer and learning-rate schedule (SPEC §2.3).

SGD with Nesterov momentum 0.9, lr 5e-3, x0.1 at 25/30 and 28/30 of training (the paper's recipe), or
AdamW with linear warm-up and cosine decay for small CPU runs. Weight decay applies to weight matrices
only: a model's ``no_weight_decay()`` names the norms, biases and embeddings it exempts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch


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


def build_optimizer(
    cfg: OptimConfig, model: torch.nn.Module, extra: list[torch.nn.Module]
) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only (not norms, biases, embeddings: SPEC §2.3)."""
    decay, no_decay = [], []
    for module in [model, *extra]:
        skip = module.no_weight_decay()
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


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
        group["lr"] = lr
    return lr
