"""Projector: video-encoder tokens [B, N, D_enc] -> LLM input embeddings [B, N, D_llm].

Variants by name through :data:`PROJECTORS` (a plain dict, no registry side effects). Module layouts
match LLaVA's ``mm_projector`` (``linear``: one Linear; ``mlp2x_gelu``: ``0`` Linear, ``1`` GELU, ``2``
Linear), so state-dict keys line up with LLaVA checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


def linear_projector(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


def mlp2x_gelu_projector(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {
    "linear": linear_projector,
    "mlp2x_gelu": mlp2x_gelu_projector,
}


@dataclass
class ProjectorConfig:
    """Projector option group."""

    type: str = field(
        default="mlp2x_gelu", metadata={"help": f"projector variant, one of {list(PROJECTORS)}"}
    )
    in_dim: int = field(
        default=0, metadata={"help": "video-encoder token width D_enc (0 = take it from the encoder)"}
    )
    out_dim: int = field(
        default=0, metadata={"help": "LLM hidden size D_llm (0 = take it from the LLM config)"}
    )


def build_projector(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """Build a projector variant by name; widths must be positive."""
    if name not in PROJECTORS:
        raise ValueError(f"unknown projector {name!r}; known: {list(PROJECTORS)}")
    if in_dim <= 0 or out_dim <= 0:
        raise ValueError(f"projector widths must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    return PROJECTORS[name](in_dim, out_dim)
