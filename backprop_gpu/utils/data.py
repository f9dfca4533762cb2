"""DataLoader: batch, stochastic and mini-batch regimes with seeded reshuffling."""
from __future__ import annotations

import numpy as np

from ..array import get_backend
from ..tape.tensor import Tensor


def _as(arr, dtype):
    arr = np.asarray(arr)
    return arr if arr.dtype == dtype else arr.astype(dtype)


class DataLoader:
    """Iterate over ``(x, y)`` tensor batches of an :class:`ArrayDataset`.

    ``batch_size=None`` gives batch gradient descent (the whole set each step),
    ``1`` stochastic and ``k`` mini-batch. With ``shuffle`` the order is
    redrawn each epoch from the loader's own seeded generator, whose state
    (``state_dict``) checkpoints carry so a resumed run sees the same batches.
    ``rank``/``world_size`` give each of several processes a disjoint share of
    every epoch (each takes ``batch_size // world_size`` of every global batch).
    """

    def __init__(self, dataset, batch_size=32, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 device=None, rank: int = 0, world_size: int = 1):
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        if batch_size is not None and batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world_size {world_size}")
        self.dataset = dataset
        # features as float32; class labels as int64, regression targets as float32 (converted once, here)
        self._x = _as(dataset.x, np.float32)
        y = np.asarray(dataset.y)
        self._y = _as(y, np.int64 if y.dtype.kind in "iub" else np.float32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.backend = get_backend(device)
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        n = len(self.dataset)
        if self.batch_size is None:
            return 1
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _to_tensor(self, arr):
        return Tensor._make(self.backend.asarray(np.ascontiguousarray(arr)), self.backend)

    def __iter__(self):
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        bs = n if self.batch_size is None else self.batch_size
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            if len(idx) < bs and self.drop_last:
                break
            if self.world_size > 1:
                idx = np.array_split(idx, self.world_size)[self.rank]
            yield self._to_tensor(self._x[idx]), self._to_tensor(self._y[idx])

    def state_dict(self) -> dict:
        """The shuffling generator's state (plain JSON-able data)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
