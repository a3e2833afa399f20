"""Adaptive Regulation: per-sample pseudo-label weights from K stochastic teacher predictions
(docs/DESIGN.md §Adaptive Regulation).

Shape notation: K samples, B batch, C classes.

    q [K, B, C] (softmaxes)  ->  q̄ = mean_k q_k          [B, C]
                                 ŷ = argmax q̄             [B]
                                 p̄ = q̄[ŷ]                 [B]
                                 s = std_k q_k[ŷ]         [B]   (unbiased, K-1 in the denominator)
    w = 2σ(e^{p̄} − e) · 2(σ(1 / (std_scale · s + eps)) − ½)

The first factor grows with confidence (0.511 at p̄ = 0.5, 1 at p̄ = 1); the second shrinks as the K
predictions disagree (1 at s = 0, 0.462 at s = 0.05).

The K predictions differ only by the fusion-head dropout. :func:`teacher_k_samples` runs the teacher's
backbone and fusion once and samples K dropout masks on ``h`` (what the training script uses);
:func:`teacher_k_full_passes` is the official computation (K whole teacher passes with the head dropout
in train mode), kept as the reference for the equivalence test and the cost benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .model.encoder import SeFAREncoder


@dataclass
class RegulationConfig:
    """Constants of the Adaptive Regulation weight (defaults: the paper's)."""

    num_samples: int = field(default=10, metadata={"help": "K stochastic teacher predictions per clip"})
    std_scale: float = field(default=20.0, metadata={"help": "multiplier of s inside 1/(std_scale*s + eps)"})
    eps: float = field(default=1e-9, metadata={"help": "added to std_scale*s before the reciprocal"})


@dataclass
class RegulationStats:
    """K-sample statistics and the resulting weights; every field is ``[B]`` except ``q_mean [B, C]``."""

    q_mean: torch.Tensor
    pseudo_label: torch.Tensor
    p_mean: torch.Tensor
    p_std: torch.Tensor
    weight: torch.Tensor


def adaptive_weight(
    p_mean: torch.Tensor, p_std: torch.Tensor, std_scale: float = 20.0, eps: float = 1e-9
) -> torch.Tensor:
    """``w = 2σ(e^{p̄} − e) · 2(σ(1/(std_scale·s + eps)) − ½)``, elementwise."""
    confidence = 2.0 * torch.sigmoid(torch.exp(p_mean) - math.e)
    agreement = 2.0 * (torch.sigmoid(1.0 / (std_scale * p_std + eps)) - 0.5)
    return confidence * agreement


def k_sample_stats(q: torch.Tensor, config: RegulationConfig | None = None) -> RegulationStats:
    """Statistics of K softmax predictions ``q [K, B, C]`` and their Adaptive Regulation weights."""
    config = config or RegulationConfig()
    if q.ndim != 3:
        raise ValueError(f"expected softmaxes [K, B, C], got shape {tuple(q.shape)}")
    q_mean = q.mean(dim=0)  # [B, C]
    pseudo = q_mean.argmax(dim=1)  # [B]
    p_k = q.gather(2, pseudo.view(1, -1, 1).expand(q.shape[0], -1, 1)).squeeze(2)  # [K, B]
    p_mean = p_k.mean(dim=0)
    # unbiased std (as the official torch.std); with K = 1 there is no spread to measure: s = 0
    p_std = p_k.std(dim=0, unbiased=True) if q.shape[0] > 1 else torch.zeros_like(p_mean)
    weight = adaptive_weight(p_mean, p_std, config.std_scale, config.eps)
    return RegulationStats(q_mean=q_mean, pseudo_label=pseudo, p_mean=p_mean, p_std=p_std, weight=weight)


@torch.no_grad()
def teacher_k_samples(teacher: SeFAREncoder, video: torch.Tensor, k: int) -> torch.Tensor:
    """One backbone + fusion pass, then K head-dropout samples: softmaxes ``[K, B, C]``.

    The teacher should be in eval mode (no drop path); the head dropout is sampled explicitly.
    """
    h = teacher.forward_head(teacher.forward_features(video), pre_logits=True)  # [B, Dh]
    return teacher.fusion_head.sample_logits(h, k).softmax(dim=-1)


@torch.no_grad()
def teacher_k_full_passes(teacher: SeFAREncoder, video: torch.Tensor, k: int) -> torch.Tensor:
    """Reference (official) computation: K full teacher passes, eval mode except the head dropout.

    Returns softmaxes ``[K, B, C]``; restores the dropout's previous mode.
    """
    was_training = teacher.fusion_head.dropout.training
    teacher.set_head_dropout(True)
    try:
        return torch.stack([teacher(video).logits.softmax(dim=-1) for _ in range(k)])
    finally:
        teacher.set_head_dropout(was_training)
