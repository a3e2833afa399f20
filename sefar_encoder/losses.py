"""Semi-supervised losses, the sine ramp and confidence-threshold masks (SPEC §2.3, §2.5).

Shape notation: B batch, C classes.

    L = L_sup + ξ(e) · (γ1 · L_un + γ2 · L_mix)
    L_sup = CE(student(labeled), y)
    L_un  = mean_b w_b · CE(student(strong_b), ŷ_b)
    L_mix = mean_b w̃_b · mean_c (softmax(z_mix) − ỹ)²,   ỹ = λ' q̄ + (1−λ') q̄[π],  w̃ = λ' w + (1−λ') w[π]
    ξ(e)  = sin(π/2 · (e + 1 − W) / (E − W)) for e ≥ W, else 0   (clipped to ≤ 1)

For the ``fixmatch``/``svformer`` baselines and the "Ada-Reg off" ablation, the weights ``w`` are a
hard confidence mask (:func:`threshold_mask`, p̄ ≥ 0.95) instead of Adaptive Regulation's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .model.token_mix import MixSpec


@dataclass
class LossConfig:
    """Weights and switches of the semi-supervised objective."""

    gamma_un: float = field(default=2.0, metadata={"help": "γ1, weight of L_un"})
    gamma_mix: float = field(default=2.0, metadata={"help": "γ2, weight of L_mix"})
    mix_on_logits: bool = field(
        default=False,
        metadata={"help": "regress raw logits (not softmax) onto ỹ in L_mix: the official code's behaviour"},
    )
    threshold: float = field(
        default=0.95, metadata={"help": "confidence threshold for fixmatch/svformer and Ada-Reg off"}
    )


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_sup``: cross-entropy of ``logits [B, C]`` against integer ``labels [B]``."""
    return F.cross_entropy(logits, labels)


def unlabeled_loss(logits: torch.Tensor, pseudo_labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L_un = mean_b w_b · CE(logits_b, ŷ_b)`` (mean over the whole batch, weights not renormalised)."""
    ce = F.cross_entropy(logits, pseudo_labels, reduction="none")  # [B]
    return (weights.detach() * ce).mean()


def mix_loss(
    logits: torch.Tensor,
    q_mean: torch.Tensor,
    weights: torch.Tensor,
    mix: MixSpec,
    on_logits: bool = False,
) -> torch.Tensor:
    """``L_mix``: weighted squared error of the mixed clip's prediction against the mixed teacher target.

    ``logits [B, C]`` come from the student on the TubeTokenMix-ed strong views; ``q_mean [B, C]`` and
    ``weights [B]`` are the teacher's (un-mixed) K-sample mean and Adaptive Regulation weights. The
    same ``mix`` (λ', π) that mixed the tokens mixes the targets and the weights.
    ``on_logits`` reproduces the official code, which regresses raw logits onto probabilities.
    """
    target = mix.mix_targets(q_mean.detach())  # ỹ [B, C]
    w_mix = mix.mix_targets(weights.detach())  # w̃ [B]
    pred = logits if on_logits else logits.softmax(dim=-1)
    per_sample = (pred - target).pow(2).mean(dim=-1)  # [B]
    return (w_mix * per_sample).mean()


def sine_ramp(epoch: float, warm_epochs: int, total_epochs: int) -> float:
    """``ξ(e) = sin(π/2 · (e + 1 − W) / (E − W))`` for ``e ≥ W`` else 0, clipped to at most 1.

    ``epoch`` is 0-based; the first SSL epoch (e = W) already gets a small positive weight, the last
    (e = E − 1) gets 1.
    """
    if epoch < warm_epochs:
        return 0.0
    if total_epochs <= warm_epochs:
        raise ValueError(f"total_epochs ({total_epochs}) must exceed warm_epochs ({warm_epochs})")
    progress = min((epoch + 1 - warm_epochs) / (total_epochs - warm_epochs), 1.0)
    return math.sin(math.pi / 2 * progress)


def threshold_mask(probs: torch.Tensor, threshold: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch-style hard pseudo-labels: ``probs [B, C]`` -> (``ŷ [B]``, mask ``[B]`` = 1[max ≥ τ]).

    Use ``mask`` as the weights of :func:`unlabeled_loss` / :func:`mix_loss`.
    """
    p_max, pseudo = probs.max(dim=-1)
    return pseudo, (p_max >= threshold).to(probs.dtype)


def total_loss(
    l_sup: torch.Tensor,
    l_un: torch.Tensor,
    l_mix: torch.Tensor,
    ramp: float,
    config: LossConfig | None = None,
) -> torch.Tensor:
    """``L = L_sup + ξ(e) (γ1 L_un + γ2 L_mix)``."""
    config = config or LossConfig()
    return l_sup + ramp * (config.gamma_un * l_un + config.gamma_mix * l_mix)
