"""TubeTokenMix: mix the patch tokens of two clips with one spatial mask shared by every frame.

Shape notation: B batch, S frames of all views, N patch tokens per frame, D width, C classes.

    λ ~ Beta(α, β)                      (α = β = 10)
    mask [N]: ⌊λN⌋ ones at random grid positions   ones = token kept from the sample itself
    λ' = ⌊λN⌋ / N                       (the share actually kept; targets use λ', not λ)
    perm [B]: one batch permutation π, used for every frame, every view and the targets

    tokens [B, S, N, D] ──► where(mask, tokens, tokens[π])      (same mask for all S frames: a "tube")
    targets [B, C]      ──► λ' · targets + (1 − λ') · targets[π]

A :class:`MixSpec` is drawn once per step and handed both to the model (``forward(video, mix=spec)``)
and to the loss (``spec.mix_targets``), so the permutation cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixSpec:
    """One TubeTokenMix draw: ``mask [N]`` (bool, True = keep own token), ``perm [B]``, ``lam_eff`` = λ'."""

    mask: torch.Tensor
    perm: torch.Tensor
    lam_eff: float

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mix patch tokens ``[B, S, N, D]`` (or ``[B, N, D]``) with their partners ``tokens[perm]``."""
        B, N = tokens.shape[0], tokens.shape[-2]
        if N != self.mask.numel() or B != self.perm.numel():
            raise ValueError(
                f"MixSpec drawn for batch {self.perm.numel()} x {self.mask.numel()} tokens, "
                f"applied to batch {B} x {N} tokens"
            )
        keep = self.mask.to(tokens.device).view(N, 1)  # broadcasts over [..., N, D]
        return torch.where(keep, tokens, tokens[self.perm.to(tokens.device)])

    def mix_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """``λ' · t + (1 − λ') · t[perm]`` along the batch dimension (soft labels, weights, ...)."""
        if targets.shape[0] != self.perm.numel():
            raise ValueError(f"targets have batch {targets.shape[0]}, MixSpec has {self.perm.numel()}")
        perm = self.perm.to(targets.device)
        return self.lam_eff * targets + (1.0 - self.lam_eff) * targets[perm]


class TubeMix:
    """Draws :class:`MixSpec` objects; ``λ ~ Beta(alpha, beta)``."""

    def __init__(self, alpha: float = 10.0, beta: float = 10.0) -> None:
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"Beta parameters must be positive, got ({alpha}, {beta})")
        self.alpha = alpha
        self.beta = beta

    def sample_lambda(self, generator: torch.Generator | None = None) -> float:
        """λ ~ Beta(α, β), reproducible from ``generator``.

        torch's Beta/Gamma samplers ignore generators, so a 62-bit seed is drawn from the torch
        generator and numpy's Beta sampler is seeded with it: the whole draw still follows the one
        generator the training script checkpoints.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return float(np.random.default_rng(seed).beta(self.alpha, self.beta))

    def sample(
        self,
        batch_size: int,
        grid: tuple[int, int] | int,
        generator: torch.Generator | None = None,
    ) -> MixSpec:
        """One draw for a batch of ``batch_size`` clips on a patch grid ``(gh, gw)`` (or N tokens)."""
        n = grid if isinstance(grid, int) else grid[0] * grid[1]
        lam = self.sample_lambda(generator)
        kept = int(np.floor(lam * n))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[:kept]] = True
        perm = torch.randperm(batch_size, generator=generator)
        return MixSpec(mask=mask, perm=perm, lam_eff=kept / n)
