"""Deterministic per-epoch data order that can start mid-epoch (exact resume without replay)."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``seed + epoch`` (or 0..n-1 without shuffle),
    sharded over ``world_size`` processes, starting after ``skip`` indices of this process."""

    def __init__(self, length: int, *, seed: int, epoch: int = 0, shuffle: bool = True, skip: int = 0,
                 world_size: int = 1, rank: int = 0) -> None:
        self.length = length
        self.seed = seed
        self.epoch = epoch
        self.shuffle = shuffle
        self.skip = skip
        self.world_size = world_size
        self.rank = rank

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.world_size > 1:
            per = -(-self.length // self.world_size)
            order = (order + order[: per * self.world_size - self.length])[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        per = -(-self.length // self.world_size) if self.world_size > 1 else self.length
        return max(0, per - self.skip)
