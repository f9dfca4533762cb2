"""``bg.utils.data``: Dataset, TensorDataset, Subset, random_split, default_collate and the DataLoader
(batch, stochastic and mini-batch regimes with seeded reshuffling), with ``torch.utils.data``'s API."""
from __future__ import annotations

import collections.abc
import math
import numbers

import numpy as np

from ..array import get_backend
from ..ops.joining import stack
from ..tape.tensor import Tensor


class Dataset:
    """A map-style data set, as ``torch.utils.data.Dataset``: subclasses define ``__getitem__(i)``
    and ``__len__``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Samples are the ``index``-th rows of each tensor, as ``torch.utils.data.TensorDataset``.

    Every tensor must have the same size of its first dimension (ValueError naming the sizes)."""

    def __init__(self, *tensors):
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"TensorDataset takes Tensors, got {type(t).__name__} at position {i}")
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: tensor {i} is 0-d; every tensor needs a first dimension")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) > 1:
            raise ValueError(f"Size mismatch between tensors: first dimensions {sizes} differ")
        self.tensors = tuple(tensors)

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0] if self.tensors else 0


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order, as ``torch.utils.data.Subset``."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return [self.dataset[self.indices[i]] for i in idx]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


def _permutation(n, generator):
    if generator is None:
        return get_backend(None).permutation(n)  # the default generator, seeded by bg.manual_seed
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or None, got {type(generator).__name__}")
    return generator.permutation(n)


def random_split(dataset, lengths, generator=None) -> list:
    """Split ``dataset`` into non-overlapping random :class:`Subset` s of the given ``lengths``, as
    ``torch.utils.data.random_split``.

    ``lengths`` are sizes summing to ``len(dataset)``, or fractions summing to 1: each gets
    ``floor(frac * n)`` and the remainder goes one by one to the first subsets, as torch's.
    ``generator`` is a ``numpy.random.Generator`` (default: the one ``bg.manual_seed`` seeds)."""
    lengths = list(lengths)
    n = len(dataset)
    if lengths and all(isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral) for x in lengths) \
            and math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1: {frac}")
        sizes = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        lengths = sizes
    if any(not isinstance(x, numbers.Integral) or x < 0 for x in lengths):
        raise ValueError(f"random_split lengths must be non-negative ints or fractions summing to 1, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"Sum of input lengths ({sum(lengths)}: {lengths}) does not equal the length of the "
                         f"input dataset ({n})!")
    order = _permutation(n, generator).tolist()
    out, start = [], 0
    for k in lengths:
        out.append(Subset(dataset, order[start:start + k]))
        start += k
    return out


def default_collate(batch):
    """Merge a list of samples into a batch, as ``torch.utils.data.default_collate``.

    Tensors are stacked (new first dimension); NumPy arrays and NumPy numbers become stacked
    tensors of their dtype; Python floats a float64 tensor, ints an int64 one, bools a bool one;
    strings stay a list; dicts collate per key, tuples and lists per position (a list of
    batches, as torch), named tuples into the same named tuple."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(list(batch), 0)
    if isinstance(elem, (np.ndarray, np.generic)) and elem.dtype.kind in "biuf":
        return Tensor(np.stack([np.asarray(b) for b in batch]))
    if isinstance(elem, bool):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, float):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if len({len(b) for b in batch}) > 1:
            raise RuntimeError(f"each element in list of batch should be of equal size, got sizes "
                               f"{sorted({len(b) for b in batch})}")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                    f"found {type(elem).__name__}")


def _as(arr, dtype):
    arr = np.asarray(arr)
    return arr if arr.dtype == dtype else arr.astype(dtype)


class DataLoader:
    """Iterate over ``(x, y)`` tensor batches of an :class:`ArrayDataset`, or over the collated
    batches of any map-style :class:`Dataset` (a :class:`TensorDataset`, a subclass).

    ``batch_size=None`` gives batch gradient descent (the whole set each step),
    ``1`` stochastic and ``k`` mini-batch. With ``shuffle`` the order is
    redrawn each epoch from the loader's own seeded generator, whose state
    (``state_dict``) checkpoints carry so a resumed run sees the same batches.
    ``rank``/``world_size`` give each of several processes a disjoint share of
    every epoch (each takes ``batch_size // world_size`` of every global batch).

    For a map-style dataset, ``collate_fn`` merges the list of samples of a batch (default
    :func:`default_collate`); a TensorDataset's batches are gathered rows, a list of one tensor
    per dataset tensor, on the tensors' device unless ``device`` is given. ``generator`` (a
    ``numpy.random.Generator``) replaces the seeded shuffling generator.
    """

    def __init__(self, dataset, batch_size=32, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 device=None, rank: int = 0, world_size: int = 1, *, collate_fn=None, generator=None):
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        if batch_size is not None and batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world_size {world_size}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"generator must be a numpy.random.Generator or None, got {type(generator).__name__}")
        self.dataset = dataset
        self.collate_fn = collate_fn
        # an app ArrayDataset (x, y arrays) without a collate_fn takes the array path; any other
        # map-style dataset (a TensorDataset, a Dataset subclass) is indexed sample by sample
        self._arrays = collate_fn is None and not isinstance(dataset, Dataset) and hasattr(dataset, "x") \
            and hasattr(dataset, "y")
        if self._arrays:
            # features as float32; class labels as int64, regression targets as float32 (converted once, here)
            self._x = _as(dataset.x, np.float32)
            y = np.asarray(dataset.y)
            self._y = _as(y, np.int64 if y.dtype.kind in "iub" else np.float32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._device_given = device is not None
        self.backend = get_backend(device)
        self.rank, self.world_size = rank, world_size
        # shuffling draws from ``generator`` when given (its state is what state_dict carries)
        self.rng = np.random.default_rng(seed) if generator is None else generator

    def __len__(self):
        n = len(self.dataset)
        if self.batch_size is None:
            return 1
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _to_tensor(self, arr):
        return Tensor._make(self.backend.asarray(np.ascontiguousarray(arr)), self.backend)

    def _batch_indices(self):
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        bs = n if self.batch_size is None else self.batch_size
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            if len(idx) < bs and self.drop_last:
                break
            if self.world_size > 1:
                idx = np.array_split(idx, self.world_size)[self.rank]
            yield idx

    def __iter__(self):
        if self._arrays and not self.backend.is_host:
            yield from self._prefetched(self._batch_indices())
            return
        for idx in self._batch_indices():
            if self._arrays:
                yield self._to_tensor(self._x[idx]), self._to_tensor(self._y[idx])
            else:
                yield self._collate(idx)

    def _prefetched(self, batches):
        """The batches on a GPU: gathered into pinned buffers and copied on a side stream
        (:class:`~backprop_gpu.array.staging.BatchStager`), the next one issued before the current
        one is handed out, so its gather and copy overlap the step that uses the current one."""
        if getattr(self, "_stager", None) is None:
            from ..array.staging import BatchStager

            self._stager = BatchStager(self.backend.arrays)
        stager, b, pending = self._stager, self.backend, None
        for idx in batches:
            staged = stager.stage((self._x, idx), (self._y, idx))
            if pending is not None:
                yield tuple(Tensor._make(a, b) for a in stager.ready(pending))
            pending = staged
        if pending is not None:
            yield tuple(Tensor._make(a, b) for a in stager.ready(pending))

    def _collate(self, idx):
        """One batch of a map-style dataset: a TensorDataset's rows gathered in one index per tensor
        (what stacking its samples would give), anything else through ``collate_fn``."""
        ds = self.dataset
        if isinstance(ds, TensorDataset) and self.collate_fn is None:
            out = []
            for t in ds.tensors:
                rows = Tensor._make(t.array[t.backend.asarray(idx)], t.backend)
                out.append(rows.to(self.backend) if self._device_given else rows)
            return out  # a list, as torch's default_collate gives for tuple samples
        return (self.collate_fn or default_collate)([ds[int(i)] for i in idx])

    def state_dict(self) -> dict:
        """The shuffling generator's state (plain JSON-able data)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore the shuffling generator's state from :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]


__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "default_collate", "DataLoader"]
