"""Sharding the data: each rank takes a disjoint share of every global batch.

The rule (shared with ``DataLoader(rank=, world_size=)``): an epoch's order
(a permutation drawn from the same seed on every rank) is cut into global
batches of ``batch_size``; each global batch is split into ``world``
contiguous parts with :func:`numpy.array_split` (sizes differ by at most one,
the first ranks taking the extra samples), and rank ``r`` takes part ``r``.
So ``batch_size`` stays the *global* batch: with ``B`` and ``N`` ranks each
rank computes on ``B / N`` samples per step (``B`` must be divisible by
``N``), and an optimizer step sees the same samples as a single process with
batch ``B`` would. Averaging gradients weighted by each rank's share
(:class:`ShardedLoader` does the bookkeeping) then makes ``N`` ranks compute
what one process computes, up to float rounding, including in a last,
partial, unevenly split batch.

A last global batch with fewer samples than ranks would leave some rank
with nothing; it is dropped on every rank (at most ``N - 1`` samples an epoch).
"""
from __future__ import annotations

import numpy as np


def shard_indices(n: int, rank: int, world: int, epoch_perm=None, batch_size: int | None = None,
                  drop_last: bool = False) -> list[np.ndarray]:
    """This rank's sample indices for each global batch of one epoch.

    Args:
        n: dataset size.
        rank, world: this rank and the number of ranks.
        epoch_perm: the epoch's order of ``range(n)``, the same on every rank
            (e.g. ``np.random.default_rng(seed + epoch).permutation(n)``); ``None`` is ``0..n-1``.
        batch_size: the global batch; ``None`` takes the whole set as one batch.
        drop_last: drop a last global batch smaller than ``batch_size``.

    Returns one index array per global step. Over all ranks the arrays of a
    step are disjoint and together form that global batch.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of size {world}")
    order = np.arange(n) if epoch_perm is None else np.asarray(epoch_perm)
    if len(order) != n:
        raise ValueError(f"epoch_perm has {len(order)} entries for a dataset of {n}")
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = []
    for start in range(0, n, bs):
        idx = order[start:start + bs]
        if (len(idx) < bs and drop_last) or len(idx) < world:
            break
        out.append(np.array_split(idx, world)[rank])
    return out


def global_batch_sizes(n: int, batch_size: int | None, world: int, drop_last: bool = False) -> list[int]:
    """The size of every global batch of an epoch that :func:`shard_indices` keeps."""
    bs = n if batch_size is None else int(batch_size)
    sizes = [min(bs, n - s) for s in range(0, n, bs)]
    if drop_last and sizes and sizes[-1] < bs:
        sizes.pop()
    if sizes and sizes[-1] < world:
        sizes.pop()
    return sizes


class DistributedSampler:
    """Per-rank index batches for a custom loop: ``for idx, weight in sampler: ...``.

    Like ``torch.utils.data.DistributedSampler`` with a batch sampler on top:
    the order is ``default_rng(seed + epoch).permutation(n)`` (same on every
    rank; call :meth:`set_epoch` each epoch), split by :func:`shard_indices`.
    ``weight`` is this rank's share of the global batch, for
    ``all_reduce_gradients(optimizer, weight=weight)``.
    """

    def __init__(self, n: int, batch_size: int | None, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        from . import comm

        self.n, self.batch_size = int(n), batch_size
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if batch_size is not None and batch_size % self.world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by {self.world_size} ranks")
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which with the seed decides the shuffle order (call it before each epoch)."""
        self.epoch = int(epoch)

    def __iter__(self):
        perm = np.random.default_rng(self.seed + self.epoch).permutation(self.n) if self.shuffle else None
        shards = shard_indices(self.n, self.rank, self.world_size, perm, self.batch_size, self.drop_last)
        sizes = global_batch_sizes(self.n, self.batch_size, self.world_size, self.drop_last)
        for idx, g in zip(shards, sizes):
            yield idx, len(idx) / g

    def __len__(self):
        return len(global_batch_sizes(self.n, self.batch_size, self.world_size, self.drop_last))


class ShardedLoader:
    """A ``DataLoader(..., rank=r, world_size=N)`` that also tracks each step's share of the global batch.

    Iterates exactly like the wrapped loader (its batches are this rank's
    shards, drawn from the loader's own seeded generator, so checkpoints keep
    working), except that a last global batch smaller than ``N`` is skipped on
    every rank. After each batch, :attr:`weight` is ``local samples / global
    samples``, which :meth:`TrainingSetup.after_backward` passes to
    :func:`all_reduce_gradients`. Everything else (``len``, ``state_dict``,
    ``load_state_dict``, ``dataset``, ...) is the wrapped loader's.
    """

    def __init__(self, loader, rank: int | None = None, world_size: int | None = None):
        from . import comm

        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        lr, lw = getattr(loader, "rank", 0), getattr(loader, "world_size", 1)
        if (lr, lw) != (rank, world_size):
            raise ValueError(f"the loader takes shard {lr} of {lw} but this is rank {rank} of {world_size}: "
                             f"build it with DataLoader(..., rank={rank}, world_size={world_size})")
        self.loader = loader
        self.rank, self.world_size = rank, world_size
        self.weight = 1.0 / world_size

    def _sizes(self):
        return global_batch_sizes(len(self.loader.dataset), self.loader.batch_size, self.world_size,
                                  self.loader.drop_last)

    def __iter__(self):
        sizes = self._sizes()
        it = iter(self.loader)
        try:
            for g in sizes:
                x, y = next(it)
                self.weight = len(y) / g
                yield x, y
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __len__(self):
        return len(self._sizes())

    def __getattr__(self, name):
        if name == "loader":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)
