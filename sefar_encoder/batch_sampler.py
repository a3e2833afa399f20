"""Which clips make each batch: seeded, resumable epoch orders, split across processes (docs/DESIGN.md
§Dataset and loader). Frame choice within a clip is :mod:`sefar_encoder.sampling`; this is the order of
clips.

    InfiniteBatchSampler(num_items, batch_size, seed, stream, start_batch, shard)
        ──► [(index, (seed, stream, epoch, position)), ...] per batch, forever
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_permutation(num_items: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
    """The data order of one epoch: a function of (seed, stream, epoch) only, so resuming reproduces it."""
    return np.random.default_rng([seed, stream, epoch]).permutation(num_items)


class InfiniteBatchSampler(Sampler):
    """Endless batches of keys ``(index, seed_words)`` walking through seeded epoch permutations.

    Position ``p`` of the stream is item ``p % N`` of epoch ``p // N``'s permutation; its augmentation
    seed is ``(seed, stream, epoch, p % N)``. ``start_batch`` resumes exactly where a run stopped. Batches
    run across epoch boundaries, so no item is dropped. With ``shard=(rank, world)`` each process gets
    items ``rank, rank + world, ...`` of every global batch, so any number of processes sees the same
    global batches (``batch_size`` is the global size and must be divisible by ``world``).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        stream: int = 0,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need num_items >= 1 and batch_size >= 1, got {num_items}, {batch_size}")
        rank, world = shard
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"global batch {batch_size} cannot be split into shard {rank} of {world}")
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.stream, self.start_batch = seed, stream, start_batch
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        pos = self.start_batch * self.batch_size
        epoch, perm = -1, None
        while True:
            batch = []
            for p in range(pos, pos + self.batch_size):
                e, i = divmod(p, self.num_items)
                if e != epoch:
                    epoch, perm = e, epoch_permutation(self.num_items, self.seed, e, self.stream)
                batch.append((int(perm[i]), (self.seed, self.stream, e, i)))
            pos += self.batch_size
            yield batch[self.rank :: self.world]
