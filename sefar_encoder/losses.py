"""Semi-supervised losses, the sine ramp and confidence-threshold masks (docs/DESIGN.md §Losses).

Shape notation: B batch, C classes.

    L = L_sup + ξ(e) · (γ1 · L_un + γ2 · L_mix)
    L_sup = CE(student(labeled), y)
    L_un  = mean_b w_b · CE(student(strong_b), ŷ_b)
    L_mix = mean_b w̃_b · mean_c (softmax(z_mix) − ỹ)²,   ỹ = λ' q̄ + (1−λ') q̄[π],  w̃ = λ' w + (1−λ') w[π]
    ξ(e)  = sin(π/2 · (e + 1 − W) / (E − W)) for e ≥ W, else 0   (clipped to ≤ 1)

For the ``fixmatch``/``svformer`` baselines and the "Ada-Reg off" ablation, the weights ``w`` are a
hard confidence mask (:func:`threshold_mask`, p̄ ≥ 0.95) instead of Adaptive Regulation's. ``freematch``
masks with self-adaptive thresholds (:class:`SelfAdaptiveThreshold`) and adds a fairness term:

    L = L_sup + ξ(e) (γ1 L_un + w_f L_f)          (:func:`fairness_loss`)

``LossConfig.mix_on_logits`` switches L_mix, for every method with TubeTokenMix (svformer, sefar), to
regress the raw logits instead of softmax(z_mix) onto ỹ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
        metadata={
            "help": "L_mix regresses the mixed clip's raw logits instead of their softmax onto the mixed "
            "target ỹ (true: the official SeFAR code; false: the paper's formula); for every method with "
            "TubeTokenMix (svformer, sefar)"
        },
    )
    threshold: float = field(
        default=0.95, metadata={"help": "confidence threshold for fixmatch/svformer/ltg and Ada-Reg off"}
    )


@dataclass
class FreeMatchConfig:
    """FreeMatch's self-adaptive thresholds and fairness loss (defaults: the paper's / official configs')."""

    momentum: float = field(
        default=0.999, metadata={"help": "λ of the running thresholds (one update per micro-batch)"}
    )
    fairness: bool = field(default=True, metadata={"help": "add the self-adaptive fairness loss L_f"})
    fairness_weight: float = field(default=0.001, metadata={"help": "w_f, weight of L_f"})


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


class SelfAdaptiveThreshold:
    """FreeMatch's self-adaptive thresholds (Wang et al., ICLR 2023): running estimates of the model's
    confidence on the unlabeled weak views, one :meth:`update` per forward, then :meth:`mask`.

    With ``q [B, C]`` the weak views' softmaxes (B over every process: ``reduce_sum`` sums the batch
    statistics across processes, so every process keeps the same state):

        τ      ← λ τ     + (1 − λ) mean_b max_c q_bc              global threshold
        p̃(c)   ← λ p̃(c)  + (1 − λ) mean_b q_bc                    local (per-class) estimate
        h̃(c)   ← λ h̃(c)  + (1 − λ) mean_b 1[argmax_c' q_bc' = c]  prediction histogram (for L_f)
        τ(c)   = p̃(c) / max_c' p̃(c') · τ                          per-class threshold (MaxNorm)
        mask_b = 1[max_c q_bc ≥ τ(argmax_c q_bc)]

    from τ = p̃(c) = h̃(c) = 1/C: while predictions are flat the thresholds are low and most clips count;
    they rise with the model's confidence, and classes it rarely favours get lower ones. As in the
    official code the batch enters the state before its own mask is drawn. The state (2C + 1 numbers) is
    float64 on the CPU and round-trips through JSON exactly (:meth:`state_dict`).
    """

    def __init__(
        self,
        num_classes: int,
        momentum: float = 0.999,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.reduce_sum = reduce_sum
        self.tau = torch.tensor(1.0 / num_classes, dtype=torch.float64)
        self.p_model = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        self.label_hist = self.p_model.clone()

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> bool:
        """Fold the weak views' softmaxes ``probs [B, C]`` into the running estimates.

        Returns False, leaving the state unchanged, when the batch statistics are not finite (a step
        that will be skipped must not poison every later threshold).
        """
        p_max, pred = probs.max(dim=-1)
        hist = torch.bincount(pred, minlength=self.num_classes).to(probs.dtype)
        count = torch.full((1,), probs.shape[0], dtype=probs.dtype, device=probs.device)
        stats = torch.cat([count, p_max.sum().view(1), probs.sum(dim=0), hist])  # [2C + 2], one collective
        if self.reduce_sum is not None:
            stats = self.reduce_sum(stats)
        stats = stats.to(torch.float64).cpu()
        if not bool(torch.isfinite(stats).all()) or stats[0] <= 0:
            return False
        n, c, m = stats[0], self.num_classes, self.momentum
        self.tau = m * self.tau + (1 - m) * stats[1] / n
        self.p_model = m * self.p_model + (1 - m) * stats[2 : 2 + c] / n
        self.label_hist = m * self.label_hist + (1 - m) * stats[2 + c :] / n
        return True

    def class_thresholds(self) -> torch.Tensor:
        """``τ(c) = p̃(c) / max p̃ · τ``: ``[C]`` float64."""
        return self.p_model / self.p_model.max() * self.tau

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard pseudo-labels and the mask: ``probs [B, C]`` -> (``ŷ [B]``, ``1[max ≥ τ(ŷ)] [B]``)."""
        p_max, pseudo = probs.max(dim=-1)
        thresholds = self.class_thresholds().to(probs.dtype).to(probs.device)  # no float64 on every device
        return pseudo, (p_max >= thresholds[pseudo]).to(probs.dtype)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"tau": float, "p_model": [C floats], "label_hist": [C floats]}``."""
        return {
            "tau": float(self.tau),
            "p_model": self.p_model.tolist(),
            "label_hist": self.label_hist.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p_model = torch.tensor(state["p_model"], dtype=torch.float64)
        if p_model.shape != (self.num_classes,):
            raise ValueError(f"saved thresholds have {p_model.numel()} classes, the model {self.num_classes}")
        self.tau = torch.tensor(state["tau"], dtype=torch.float64)
        self.p_model = p_model
        self.label_hist = torch.tensor(state["label_hist"], dtype=torch.float64)


def fairness_loss(
    logits: torch.Tensor, mask: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor
) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss ``L_f = −H(SumNorm(p̃ / h̃), SumNorm(p̄ / h̄))``.

    ``logits [B, C]`` are the student's on the strong views; ``p̄`` is the mean softmax and ``h̄`` the
    normalised histogram of the argmaxes of the clips that ``mask [B]`` keeps; ``p̃``, ``h̃`` are the
    running estimates of :class:`SelfAdaptiveThreshold` (constants here). ``H(p, q) = −Σ_c p_c log q_c``.
    As in the paper (and its official code) L_f is the *negative* cross-entropy: minimising it lowers the
    kept clips' normalised mean prediction where the running target is high, spreading it over the
    classes (its authors: it raises the entropy of the mean prediction). Empty histogram bins give
    ``1/h = 0`` (not inf), as in the official code; with no kept clip L_f is 0.
    """
    keep = mask > 0
    if not bool(keep.any()):
        return torch.zeros((), dtype=logits.dtype, device=logits.device)
    probs = logits[keep].softmax(dim=-1)  # [B', C]
    hist = torch.bincount(probs.argmax(dim=-1), minlength=logits.shape[-1]).to(probs.dtype)
    q = probs.mean(dim=0) * _reciprocal_or_zero(hist / hist.sum())
    q = q / q.sum()
    target = (p_model * _reciprocal_or_zero(label_hist)).to(probs.dtype).to(probs.device)
    target = target / target.sum()
    return (target * torch.log(q + 1e-12)).sum()


def _reciprocal_or_zero(x: torch.Tensor) -> torch.Tensor:
    """``1/x`` where ``x > 0``, else 0: a class with an empty histogram bin drops out instead of
    dividing by zero."""
    return torch.where(x > 0, 1.0 / torch.where(x > 0, x, torch.ones_like(x)), torch.zeros_like(x))


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
