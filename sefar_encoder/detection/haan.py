"""HAAN's model and losses (Li, He and Xu, "Weakly-Supervised Temporal Action Detection for Fine-Grained
Videos with Hierarchical Atomic Actions", ECCV 2022), written from the paper and checked against the
official code's structure (lizhi1104/HAAN), not copied.

Four 2-layer MLPs (Linear → ReLU → Dropout → Linear; each also returns its hidden activation):

    features [B, T, D] ─ encoder ─► embedding [B, T, E] ─┬─ fine ─► hidden [B, T, H], logits [B, T, C]
                                                          └─ atomic ─► cluster logits [B, T, K]
    per routine: hidden of the clips of cluster k, averaged ─► visual concepts [K, H]
                 class c ─► mean of its ``concepts_per_class`` concepts closest to the fine class weight w_c
                 set g ─► pooled representations of its classes ─ coarse ─► one logit per set

Losses (per routine, averaged over the batch):

- ``mil``: per class, the mean of the clip logits at or above the class's temporal mean (an adaptive
  top-k), binary cross-entropy against the routine's element labels;
- ``pseudo`` (λ 0.001, switch ``clustering``): cross-entropy of the atomic classifier against the cluster
  ids of k-means on the encoder's embeddings (re-clustered every few epochs by the trainer);
- ``concept`` (λ 0.01, switch ``hierarchy``): 1 − cos(w_c, representation of c) for the classes present;
- ``coarse`` (λ 0.1, switch ``hierarchy``): binary cross-entropy of the coarse MLP on each set's pooled
  representation against the routine's sets.

With both switches off this is plain MIL with the adaptive top-k pooling (W-TALC's MIL loss without its
co-activity term). The hierarchy needs clusters: ``hierarchy`` requires ``clustering``.

Departures from the official code, each for a reason: dropout follows ``module.train()/.eval()`` (not a flag);
concepts are computed for all K clusters at once with a one-hot matrix product (not a Python loop over K);
a class picks its closest concepts among the clusters present in the routine (the official code also
ranks the all-zero concepts of absent clusters, whose cosine is 0, so a class whose present concepts all
have negative cosine averages zeros); the pseudo-label cross-entropy is an unweighted mean over the clips
(the official one weights each cluster by its frequency and divides by T once more).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HAANConfig:
    """The model and loss settings (``model.*`` in the trainer's config)."""

    hidden_dim: int = field(default=512, metadata={"help": "H: hidden width of every MLP"})
    embed_dim: int = field(default=512, metadata={"help": "E: width of the encoder MLP's output"})
    dropout: float = field(default=0.5, metadata={"help": "dropout after each MLP's hidden layer"})
    clustering: bool = field(default=True, metadata={"help": "atomic actions: k-means pseudo-labels"})
    hierarchy: bool = field(
        default=True, metadata={"help": "visual concepts -> classes -> sets (needs clustering)"}
    )
    num_clusters: int = field(default=500, metadata={"help": "K: atomic actions (k-means clusters)"})
    concepts_per_class: int = field(default=5, metadata={"help": "concepts closest to a class weight"})
    coarse_pooling: Literal["mean", "max"] = field(
        default="mean", metadata={"help": "how a set pools its classes' representations"}
    )
    lambda_pseudo: float = field(default=0.001, metadata={"help": "weight of the pseudo-label loss"})
    lambda_concept: float = field(default=0.01, metadata={"help": "weight of the concept loss"})
    lambda_coarse: float = field(default=0.1, metadata={"help": "weight of the coarse (set) loss"})


class MLP(nn.Module):
    """Linear → ReLU → Dropout → Linear; returns ``(hidden, output)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(F.relu(self.hidden(x)))
        return h, self.out(h)


@dataclass
class HAANOutput:
    embedding: torch.Tensor  # [B, T, E]
    hidden: torch.Tensor  # [B, T, H] the fine classifier's hidden activation (concept space)
    logits: torch.Tensor  # [B, T, C] fine (element) logits per clip
    cluster_logits: torch.Tensor | None  # [B, T, K] with clustering


class HAAN(nn.Module):
    """The four MLPs; ``coarse_of_class[c]`` is the coarse class (set index 0..G-1) of fine class c."""

    def __init__(self, feature_dim: int, coarse_of_class: list[int], cfg: HAANConfig) -> None:
        super().__init__()
        if cfg.hierarchy and not cfg.clustering:
            raise ValueError("model.hierarchy needs model.clustering (the concepts are clusters)")
        self.cfg = cfg
        self.num_classes = len(coarse_of_class)
        self.num_coarse = max(coarse_of_class) + 1
        self.register_buffer("coarse_of_class", torch.tensor(coarse_of_class, dtype=torch.long))
        self.encoder = MLP(feature_dim, cfg.hidden_dim, cfg.embed_dim, cfg.dropout)
        self.fine = MLP(cfg.embed_dim, cfg.hidden_dim, self.num_classes, cfg.dropout)
        self.atomic = (
            MLP(cfg.embed_dim, cfg.hidden_dim, cfg.num_clusters, cfg.dropout) if cfg.clustering else None
        )
        self.coarse = MLP(cfg.hidden_dim, cfg.hidden_dim, 1, cfg.dropout) if cfg.hierarchy else None

    def forward(self, features: torch.Tensor) -> HAANOutput:
        _, embedding = self.encoder(features)
        hidden, logits = self.fine(embedding)
        cluster_logits = self.atomic(embedding)[1] if self.atomic is not None else None
        return HAANOutput(embedding, hidden, logits, cluster_logits)


# ----------------------------------------------------------------------------------------- losses
def aggregate_scores(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Routine-level logit per class: the mean of the clip logits at or above the class's temporal mean.

    ``logits [B, T, C]``, ``mask [B, T]`` (True for real clips, False for padding) -> ``[B, C]``."""
    m = mask.unsqueeze(-1).to(logits.dtype)  # [B, T, 1]
    mean = (logits * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)  # [B, 1, C]
    keep = (logits >= mean).to(logits.dtype) * m  # [B, T, C]
    return (logits * keep).sum(1) / keep.sum(1).clamp_min(1)


def mil_loss(logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of the aggregated routine logits against the multi-hot labels ``[B, C]``."""
    return F.binary_cross_entropy_with_logits(aggregate_scores(logits, mask), labels.to(logits.dtype))


def pseudo_label_loss(
    cluster_logits: torch.Tensor, clusters: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of ``cluster_logits [B, T, K]`` against cluster ids ``[B, T]`` over the real clips."""
    return F.cross_entropy(cluster_logits[mask], clusters[mask])


def visual_concepts(
    hidden: torch.Tensor, clusters: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One routine: the mean hidden activation of each cluster's clips ``[K, H]`` (zeros for clusters
    absent from the routine) and which clusters are present ``[K]``. ``hidden [T, H]``, ``clusters [T]``."""
    one_hot = F.one_hot(clusters, k).to(hidden.dtype)  # [T, K]
    counts = one_hot.sum(0)  # [K]
    return (one_hot.T @ hidden) / counts.clamp_min(1)[:, None], counts > 0


def class_representations(
    class_weights: torch.Tensor, concepts: torch.Tensor, present: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Per class the mean of its ``top_k`` present concepts closest (cosine) to its weight: ``[C, H]``.

    The choice is made without gradient; the mean carries the concepts' gradient. Fewer than ``top_k``
    present clusters: all present ones."""
    with torch.no_grad():
        similarity = F.normalize(class_weights, dim=1) @ F.normalize(concepts, dim=1).T  # [C, K]
        similarity[:, ~present] = -torch.inf
        k = min(top_k, int(present.sum()))
        chosen = torch.zeros_like(similarity).scatter_(1, similarity.topk(k, dim=1).indices, 1.0 / k)
    return chosen @ concepts


def concept_loss(
    class_weights: torch.Tensor, representations: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean of 1 − cos(w_c, rep_c) over the classes present in the routine (``labels [C]`` multi-hot)."""
    distance = 1.0 - F.cosine_similarity(class_weights, representations, dim=1)  # [C]
    present = labels > 0
    return distance[present].mean() if bool(present.any()) else distance.sum() * 0.0


def coarse_representations(
    representations: torch.Tensor, coarse_of_class: torch.Tensor, num_coarse: int, pooling: str
) -> torch.Tensor:
    """Pool the class representations ``[C, H]`` of each coarse class: ``[G, H]``."""
    index = coarse_of_class[:, None].expand_as(representations)
    out = representations.new_zeros(num_coarse, representations.shape[1])
    reduce = {"mean": "mean", "max": "amax"}[pooling]
    return out.scatter_reduce(0, index, representations, reduce=reduce, include_self=False)


def haan_losses(
    model: HAAN,
    out: HAANOutput,
    mask: torch.Tensor,
    labels: torch.Tensor,
    coarse_labels: torch.Tensor,
    clusters: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Every enabled loss and their weighted sum ``total``. ``labels [B, C]``, ``coarse_labels [B, G]``,
    ``clusters [B, T]`` (the current k-means ids of every clip; needed with clustering)."""
    cfg = model.cfg
    losses = {"mil": mil_loss(out.logits, mask, labels)}
    total = losses["mil"]
    if cfg.clustering:
        if clusters is None or out.cluster_logits is None:
            raise ValueError("clustering is on: the batch needs cluster ids")
        losses["pseudo"] = pseudo_label_loss(out.cluster_logits, clusters, mask)
        total = total + cfg.lambda_pseudo * losses["pseudo"]
    if cfg.hierarchy:
        assert model.coarse is not None and clusters is not None
        weights = model.fine.out.weight.detach()  # [C, H]
        concept, coarse = [], []
        for b in range(out.hidden.shape[0]):
            valid = mask[b]
            concepts, present = visual_concepts(out.hidden[b][valid], clusters[b][valid], cfg.num_clusters)
            reps = class_representations(weights, concepts, present, cfg.concepts_per_class)
            concept.append(concept_loss(weights, reps, labels[b]))
            pooled = coarse_representations(reps, model.coarse_of_class, model.num_coarse, cfg.coarse_pooling)
            coarse_logits = model.coarse(pooled)[1].squeeze(-1)  # [G]
            coarse.append(
                F.binary_cross_entropy_with_logits(coarse_logits, coarse_labels[b].to(coarse_logits.dtype))
            )
        losses["concept"] = torch.stack(concept).mean()
        losses["coarse"] = torch.stack(coarse).mean()
        total = total + cfg.lambda_concept * losses["concept"] + cfg.lambda_coarse * losses["coarse"]
    losses["total"] = total
    return losses
