"""Length-grouped batches: items of similar length share a batch, so little compute goes to padding.

Measured on the default router texts (MiniLM, 2 CPU cores): random batches of 32 train at ~8 items/s, batches of
similar length at ~69 items/s, because a random batch is padded to its longest prompt (BoolQ passages average 139
router tokens, PIQA goals 14).

Each epoch: shuffle all items (seeded by ``seed + epoch``), cut the shuffled order into windows of
``batch_size × window_batches`` items, sort each window by length and cut it into batches, then shuffle the
batches. Batches differ from epoch to epoch (the windows differ) while staying nearly uniform in length. Under DDP
every rank computes the same batch list (same seed and epoch) and takes every ``num_replicas``-th batch; the list
is padded by repeating its first batches so each rank gets the same number of batches (DDP needs equal step
counts), which means that with ``pad`` a few items are seen twice in an epoch when the batch count does not divide.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class _Epoch:
    """Exposed as ``batch_sampler.sampler`` so Lightning's ``set_epoch`` call (made on ``.sampler``) reaches us."""

    def __init__(self, owner: LengthGroupedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices grouped by length (see the module docstring).

    Args:
        lengths: Length of each item (router tokens).
        batch_size: Items per batch (the last batch of a window may be smaller).
        shuffle: Shuffle items and batch order (training). Without it, batches follow ascending length (evaluation).
        seed: Base seed; epoch ``e`` uses ``seed + e``.
        window_batches: Batches per sorted window: larger groups lengths more tightly, smaller mixes more.
        num_replicas: Number of ranks; ``None`` reads torch.distributed when it is initialised, else 1.
        rank: This rank; ``None`` reads torch.distributed, else 0.
        pad: Repeat batches so every rank gets the same number (training under DDP). Without it ranks may differ by
            one batch and every item is seen exactly once overall (evaluation).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        window_batches: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
        pad: bool = True,
    ) -> None:
        if batch_size < 1 or window_batches < 1:
            raise ValueError(f"batch_size ({batch_size}) and window_batches ({window_batches}) must be at least 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window_batches = window_batches
        self._num_replicas = num_replicas
        self._rank = rank
        self.pad = pad
        self.epoch = 0
        self.sampler = _Epoch(self)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside 0..{self.num_replicas - 1}")

    @property
    def num_replicas(self) -> int:
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[list[int]]:
        """Every rank's batches for the current epoch, before the split across ranks."""
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n)
        window = self.batch_size * self.window_batches
        batches = []
        for start in range(0, n, window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _mine(self) -> list[list[int]]:
        batches = self.all_batches()
        replicas = self.num_replicas
        if self.pad and batches and len(batches) % replicas:
            batches = batches + batches[: replicas - len(batches) % replicas]
        return batches[self.rank :: replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._mine()

    def __len__(self) -> int:
        n_batches = len(self.all_batches()) if self.shuffle else -(-len(self.lengths) // self.batch_size)
        replicas = self.num_replicas
        if self.pad:
            return -(-n_batches // replicas)
        return len(range(self.rank, n_batches, replicas))
