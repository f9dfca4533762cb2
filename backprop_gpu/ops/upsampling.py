"""Nearest-neighbour resizing with PyTorch's source indices, composed axis by axis.

Output index ``i`` of an axis of size ``n`` resized to ``m`` reads input
``min(floor(i * scale), n - 1)``, with ``scale`` the float32 ``1 / scale_factor``
when a scale factor was given and ``n / m`` otherwise, exactly as torch's
``'nearest'`` mode rounds it. Where those indices are ``i // k`` for a whole
``k = m / n`` (every integer upscale in practice), the axis is a broadcast view
and a reshape, whose gradient sums each block back; otherwise an index
selection, whose gradient scatter-adds. Index arrays are made once per
(sizes, scale, device) and kept, so resizing copies nothing from the host.
"""
from __future__ import annotations

import numpy as np

from ..tape.tensor import Tensor
from .indexing import index_select
from .shape import expand, reshape

#: (n, m, scale, backend) -> the device index tensor, or None where a repeat does it
_INDICES: dict = {}


def nearest_indices(n, m, scale):
    """torch's nearest source index of each of ``m`` outputs over an axis of size ``n``; ``scale``
    is the float32 step (None: ``n / m``)."""
    step = np.float32(n) / np.float32(m) if scale is None else np.float32(scale)
    idx = np.floor(np.arange(m, dtype=np.float32) * step).astype(np.int64)
    return np.minimum(idx, n - 1)


def _resize_axis(x, axis, m, scale):
    n = x.shape[axis]
    key = (n, m, scale, x.backend)
    if key not in _INDICES:
        idx = nearest_indices(n, m, scale)
        repeat = m % n == 0 and np.array_equal(idx, np.arange(m) // (m // n))
        _INDICES[key] = None if repeat else Tensor._make(x.backend.asarray(idx), x.backend)
    idx = _INDICES[key]
    if idx is not None:
        return index_select(x, axis, idx)
    if m == n:
        return x
    k = m // n
    shape = x.shape[:axis + 1] + (1,) + x.shape[axis + 1:]
    wide = expand(reshape(x, shape), shape[:axis + 1] + (k,) + shape[axis + 2:])
    return reshape(wide, x.shape[:axis] + (m,) + x.shape[axis + 1:])


def upsample_nearest(x, size, scales=None):
    """``x`` (N, C, *spatial) resized to ``size`` (one entry per spatial axis) by nearest neighbour;
    ``scales``: per axis, the float step torch uses (``1 / scale_factor``) or None for ``n / m``."""
    d = len(size)
    scales = scales or (None,) * d
    for k in range(d):
        x = _resize_axis(x, x.ndim - d + k, int(size[k]), scales[k])
    return x


__all__ = ["nearest_indices", "upsample_nearest"]
