"""Dual-level temporal sampling: *which* frames of a clip feed which view. No pixels here.
(docs/DESIGN.md §Dual-level sampling)

A clip of ``F`` frames is cut into ``S = sum(views)`` equal segments and every segment goes to exactly
one view, so views are disjoint; a view with ``n`` frames owns exactly one segment in each of ``n``
equal consecutive parts of the clip, so every view spans the whole clip. With the default
``views = (2, 2, 4)`` (S = 8)::

    segment   0   1   2   3   4   5   6   7
    view     v2  v1  v2  v0  v2  v1  v2  v0      v0 = {3, 7}, v1 = {1, 5}, v2 = {0, 2, 4, 6}

The two 2-frame views are the fine level (moments half a clip apart), the 4-frame view the coarse one.

Assignment rule (reproduces the table above and generalises): segment ``j`` lies in part
``floor((j + 1/2) * n / S)`` of a view with ``n`` frames (the part holding the segment's centre).
Views are served from the most frames to the fewest, ties from the last view to the first; each of a
view's parts takes its earliest free segment. When that greedy choice gets stuck (possible for unusual
tuples such as (2, 3, 3)), an augmenting-path step (bipartite matching) re-routes earlier choices; a
tuple with no valid assignment at all raises ``ValueError``.

Frame choice: segment ``j`` covers frames ``[floor(j F / S), floor((j + 1) F / S))``; training draws
one frame uniformly inside it, evaluation takes the frame at a fractional ``offset`` (0.5 = centre;
several offsets for multi-view testing). When ``F < S`` a segment is one frame wide and frames repeat,
so clips of any length (even 1 frame) are accepted.

Shape notation: S = sum(views) frames of one sample, ``views[v]`` frames in view v.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def _validate_views(views: tuple[int, ...]) -> tuple[int, ...]:
    views = tuple(int(n) for n in views)
    if not views or any(n < 1 for n in views):
        raise ValueError(f"views must be a non-empty tuple of positive frame counts, got {views}")
    return views


@lru_cache(maxsize=64)
def assign_segments(views: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Segment ids (ascending) owned by each view, e.g. ``(2, 2, 4) -> ((3, 7), (1, 5), (0, 2, 4, 6))``."""
    views = _validate_views(views)
    total = sum(views)
    # Slots are (view, part); serve views with the most frames first, ties from the last view backwards.
    order = sorted(range(len(views)), key=lambda v: (-views[v], -v))
    slots = [(v, k) for v in order for k in range(views[v])]
    candidates = [[j for j in range(total) if int((j + 0.5) * views[v] / total) == k] for v, k in slots]
    owner = [-1] * total  # segment -> slot index

    def augment(slot: int, visited: set[int]) -> bool:
        # Prefer a free segment (the greedy rule); only then try to re-route an earlier slot.
        for j in candidates[slot]:
            if owner[j] < 0:
                owner[j] = slot
                return True
        for j in candidates[slot]:
            if j not in visited:
                visited.add(j)
                if augment(owner[j], visited):
                    owner[j] = slot
                    return True
        return False

    for slot in range(len(slots)):
        if not augment(slot, set()):
            raise ValueError(f"views {views}: no assignment gives every view one segment per part")
    per_view: list[list[int]] = [[] for _ in views]
    for j, slot in enumerate(owner):
        per_view[slots[slot][0]].append(j)
    return tuple(tuple(sorted(s)) for s in per_view)


def segment_bounds(num_frames: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame range ``[start, end)`` of each of ``num_segments`` equal segments of a clip (``end > start``)."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got num_frames={num_frames}")
    j = np.arange(num_segments + 1, dtype=np.int64)
    edges = (j * num_frames) // num_segments
    starts = edges[:-1]
    # Clips shorter than S frames: a segment may be empty; give it one frame (repetition, never rejection).
    ends = np.maximum(edges[1:], starts + 1)
    return starts, ends


@dataclass(frozen=True)
class FrameSample:
    """Frame indices chosen for one sample: one int64 array per view, each in temporal order."""

    per_view: tuple[np.ndarray, ...]

    @property
    def views(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.per_view)

    @property
    def flat(self) -> np.ndarray:
        """``[S]`` indices in the tensor order used everywhere: view0's frames, then view1's, ..."""
        return np.concatenate(self.per_view)


class DualLevelSampler:
    """Chooses frame indices for the dual-level views of one clip.

    ``sampler.train(num_frames, rng)`` draws a random frame in each segment; ``sampler.eval(num_frames,
    offsets)`` is deterministic and returns one :class:`FrameSample` per temporal offset.
    """

    def __init__(self, views: tuple[int, ...] = (2, 2, 4)):
        self.views = _validate_views(views)
        self.num_segments = sum(self.views)
        self.segments = assign_segments(self.views)
        # The flat order (view0 segments, view1 segments, ...) as one gather index over segments.
        self._flat_segments = np.concatenate([np.asarray(s, dtype=np.int64) for s in self.segments])
        self._splits = np.cumsum(self.views)[:-1]

    def _split(self, seg_frames: np.ndarray) -> FrameSample:
        """``seg_frames [S]`` indexed by segment id -> per-view arrays in flat order."""
        return FrameSample(tuple(np.split(seg_frames[self._flat_segments], self._splits)))

    def train(self, num_frames: int, rng: np.random.Generator) -> FrameSample:
        """One uniformly random frame inside each segment."""
        starts, ends = segment_bounds(num_frames, self.num_segments)
        return self._split(rng.integers(starts, ends))

    def at_offset(self, num_frames: int, offset: float = 0.5) -> FrameSample:
        """The frame at fractional position ``offset`` in [0, 1) of each segment (0.5 = centre)."""
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"temporal offset must be in [0, 1), got {offset}")
        starts, ends = segment_bounds(num_frames, self.num_segments)
        return self._split(starts + np.floor(offset * (ends - starts)).astype(np.int64))

    def eval(self, num_frames: int, num_offsets: int = 1) -> list[FrameSample]:
        """``num_offsets`` evenly spread offsets ``(i + 1/2) / num_offsets``; 1 offset = segment centres."""
        return [self.at_offset(num_frames, (i + 0.5) / num_offsets) for i in range(num_offsets)]


def fine_views(views: tuple[int, ...]) -> tuple[int, ...]:
    """Indices of the fine-level views: those with the fewest frames, when some view has more.

    With all views of equal length there is no coarse view to keep the order, so none is fine
    (Mod-Perturb then reverses nothing; pass explicit views to reverse if an ablation wants that).
    """
    views = _validate_views(views)
    if min(views) == max(views):
        return ()
    return tuple(v for v, n in enumerate(views) if n == min(views))
