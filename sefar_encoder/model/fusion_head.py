"""Fusion head over per-view features (docs/DESIGN.md §Fusion head).

Shape notation: B batch, V views, P = V(V-1)/2 view pairs, D backbone width, Dh fusion width,
C classes, K stochastic head samples.

    f [B, V, D] ─┬─ u_v  = LN(GELU(W_u f_v))             per view, shared W_u   -> [B, V, Dh]
                 └─ g_ij = LN(GELU(W_p [f_i; f_j]))      per pair i<j, shared W_p -> [B, P, Dh]
    h = LN(GELU(W_g [g_01, g_02, ..., g_(V-2)(V-1), u_0, ..., u_(V-1)]))    pairs first, then views
    logits = W_c Dropout(h)                              p = 0.5                -> [B, C]

With V = 1 there are no pairs: ``h = LN(GELU(W_g u_0))``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn


class LinearGeluNorm(nn.Module):
    """``LN(GELU(W x))`` — the building block of every fusion stage (``fc``, ``norm``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.fc(x)))


class FusionHead(nn.Module):
    """Unary + pairwise view fusion and a dropout classifier; see the module docstring."""

    def __init__(
        self,
        in_dim: int,
        fusion_dim: int,
        num_views: int,
        num_classes: int,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_views = num_views
        self.fusion_dim = fusion_dim
        pairs = list(itertools.combinations(range(num_views), 2))  # (0,1), (0,2), (1,2), ... i < j
        self.register_buffer(
            "pair_i", torch.tensor([i for i, _ in pairs], dtype=torch.long), persistent=False
        )
        self.register_buffer(
            "pair_j", torch.tensor([j for _, j in pairs], dtype=torch.long), persistent=False
        )
        self.unary = LinearGeluNorm(in_dim, fusion_dim)  # W_u
        self.pair = LinearGeluNorm(2 * in_dim, fusion_dim) if pairs else None  # W_p
        self.fuse_all = LinearGeluNorm((len(pairs) + num_views) * fusion_dim, fusion_dim)  # W_g
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fusion_dim, num_classes)  # W_c
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def fuse(self, f: torch.Tensor) -> torch.Tensor:
        """Per-view features ``[B, V, D]`` -> fused feature ``h [B, Dh]`` (no dropout involved)."""
        if f.ndim != 3 or f.shape[1] != self.num_views:
            raise ValueError(f"expected view features [B, {self.num_views}, D], got {tuple(f.shape)}")
        parts = []
        if self.pair is not None:
            pairs = torch.cat([f[:, self.pair_i], f[:, self.pair_j]], dim=-1)  # [B, P, 2D]
            parts.append(self.pair(pairs))  # [B, P, Dh]
        parts.append(self.unary(f))  # [B, V, Dh]
        stacked = torch.cat(parts, dim=1).flatten(1)  # [B, (P+V)*Dh], pairs then views
        return self.fuse_all(stacked)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """``W_c Dropout(h)``: ``[B, Dh] -> [B, C]`` (dropout active only in train mode)."""
        return self.classifier(self.dropout(h))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.classify(self.fuse(f))

    def sample_logits(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """K stochastic predictions from one fused feature: ``h [B, Dh] -> [K, B, C]``.

        Each sample uses its own dropout mask (always active, whatever the module's mode). This is
        exactly the head-dropout randomness of K full teacher passes in eval mode, at the cost of one
        backbone pass + K small matmuls (the official code runs the whole teacher K times).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        hk = h.unsqueeze(0).expand(k, *h.shape)  # [K, B, Dh]
        return self.classifier(F.dropout(hk, p=self.dropout.p, training=True))
