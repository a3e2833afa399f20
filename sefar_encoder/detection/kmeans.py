"""K-means in torch (scikit-learn is not a dependency): HAAN's atomic actions are clusters of clip
embeddings.

k-means++ seeding (each new centre drawn with probability proportional to the squared distance to the
nearest chosen one), then Lloyd iterations until no assignment changes or ``iterations`` is reached. An
empty cluster is re-seeded with the point farthest from its centre, so exactly K centres come back. All
randomness comes from the ``generator`` passed in, so a run reproduces its clusters after a resume.

Shape notation: N points, D width, K clusters.
"""

from __future__ import annotations

import torch


def squared_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``[N, D]``, ``[K, D]`` -> ``[N, K]`` squared Euclidean distances (clamped at 0 against rounding)."""
    d = (points * points).sum(1, keepdim=True) - 2 * points @ centres.T + (centres * centres).sum(1)
    return d.clamp_min_(0.0)


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` initial centres ``[K, D]`` chosen among ``points`` by k-means++."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [points[first]]
    nearest = squared_distances(points, points[first : first + 1]).squeeze(1)  # [N]
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0.0:  # every point is a centre already: duplicates are all that is left
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(nearest / total, 1, generator=generator))
        centres.append(points[index])
        nearest = torch.minimum(nearest, squared_distances(points, points[index : index + 1]).squeeze(1))
    return torch.stack(centres)


def kmeans(
    points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``points [N, D]`` into ``k`` clusters: ``(centres [K, D], assignment [N])``.

    Needs ``N >= k`` (a ``ValueError`` says so otherwise)."""
    if points.ndim != 2 or points.shape[0] < k or k < 1:
        raise ValueError(f"k-means needs at least k={k} points of shape [N, D], got {tuple(points.shape)}")
    points = points.detach().float()
    centres = kmeans_plus_plus(points, k, generator)
    assignment = torch.full((points.shape[0],), -1, dtype=torch.long)
    for _ in range(iterations):
        distances = squared_distances(points, centres)
        new = distances.argmin(1)
        if torch.equal(new, assignment):
            break
        assignment = new
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        own = distances.gather(1, assignment[:, None]).squeeze(1)  # [N] distance to the own centre
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(own.argmax())
            centres[empty] = points[far]
            own[far] = -1.0  # not again for the next empty cluster
    return centres, assign(points, centres)


def assign(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The nearest centre of each point: ``[N]``."""
    return squared_distances(points.detach().float(), centres).argmin(1)
