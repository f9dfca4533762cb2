"""Adaptive average and max pooling with PyTorch's windows.

Output index ``i`` of an axis of size ``n`` pooled to ``m`` covers inputs
``floor(i n / m) .. ceil((i + 1) n / m) - 1``; a window is a product of one
such range per axis.

* The average is separable: pool the last axis, then the one before. An axis
  with ``m == n`` stays; where ``m`` divides ``n`` the windows tile it, and a
  reshape view and a mean do it; otherwise it is a product with the (m, n)
  matrix of window weights ``1 / size``.
* The max makes the windows tiles of one size per axis (the axis itself where
  ``m`` divides ``n``; else each window gathered, padded to the widest by
  repeating its last index, which cannot change a maximum nor come before
  it), then runs one :func:`~backprop_gpu.ops.conv.max_pool2d` with kernel =
  stride = that size. Its first maximum in row-major order takes the
  gradient, as PyTorch's.

The matrices and index arrays are made once per (sizes, device, dtype) and
kept, so a training step copies nothing from the host.
"""
from __future__ import annotations

import numpy as np

from ..tape.op import Op, apply
from ..tape.tensor import Tensor
from .conv import max_pool2d
from .indexing import index_select
from .linalg import matmul
from .reductions import mean
from .shape import expand_dims, reshape, squeeze, swapaxes

#: (kind, n, m, backend, dtype) -> constant tensor; a few entries per model
_CONSTANTS: dict = {}


def _bounds(n, m):
    """PyTorch's window [start, end) of each of the ``m`` outputs over an axis of size ``n``."""
    i = np.arange(m)
    return (i * n) // m, -((-(i + 1) * n) // m)


def _constant(kind, n, m, x):
    key = (kind, n, m, x.backend, x.dtype if kind == "avg" else None)
    t = _CONSTANTS.get(key)
    if t is None:
        start, end = _bounds(n, m)
        if kind == "avg":
            host = np.zeros((m, n), dtype=x.dtype)
            for i, (s, e) in enumerate(zip(start, end)):
                host[i, s:e] = 1.0 / (e - s)
        else:  # each window's indices, padded with its last one to the widest window
            k = int((end - start).max())
            host = np.minimum(start[:, None] + np.arange(k), end[:, None] - 1).reshape(-1)
        t = _CONSTANTS[key] = Tensor._make(x.backend.asarray(host), x.backend)
    return t


def _avg_axis(x, axis, m):
    n = x.shape[axis]
    if m == n:
        return x
    if n % m == 0:
        shape = x.shape[:axis] + (m, n // m) + x.shape[axis + 1:]
        return mean(reshape(x, shape), axis=axis + 1)
    p = _constant("avg", n, m, x)
    if axis == x.ndim - 1:
        return matmul(x, swapaxes(p, 0, 1))
    return matmul(p, x)  # axis == ndim - 2: (m, n) @ (..., n, W)


def _scatter_windows(F, g, idx, axis, n):
    """The adjoint of gathering the (m, k) window indices ``idx`` along ``axis``: ``g`` (with m * k
    there) added back into zeros of length ``n``, one slice addition per window offset. Each
    offset's m indices are distinct (see :func:`_tiles`), so no addition has a repeat to sum,
    and nothing needs the scatter-add of a general index (``numpy.add.at`` is ~10x slower)."""
    m, k = idx.shape
    out = F.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], dtype=g.dtype)
    gw = g.reshape(g.shape[:axis] + (m, k) + g.shape[axis + 1:])
    lead = (slice(None),) * axis
    for j in range(k):
        out[lead + (idx[:, j],)] += gw[lead + (slice(None), j)]
    return out


class GatherWindows(Op):
    """``x`` along ``axis`` at the (m, k) window indices ``idx`` (a device array), flattened: every
    window padded to one size. Its VJP is :class:`ScatterWindows`, and the other way round."""
    name = "gather_windows"
    saves = ()
    forward = staticmethod(lambda F, x, idx, axis, n: F.take(x, idx.reshape(-1), axis=axis))

    @staticmethod
    def vjp(F, g, out, x, idx, axis, n):
        if F.records:
            return (apply(ScatterWindows, g, idx=idx, axis=axis, n=n),)
        return (_scatter_windows(F, g, idx, axis, n),)


class ScatterWindows(Op):
    """The adjoint of :class:`GatherWindows` (recorded under ``create_graph``)."""
    name = "scatter_windows"
    saves = ()
    forward = staticmethod(_scatter_windows)

    @staticmethod
    def vjp(F, g, out, gw, idx, axis, n):
        if F.records:
            return (apply(GatherWindows, g, idx=idx, axis=axis, n=n),)
        return (F.take(g, idx.reshape(-1), axis=axis),)


def _tiles(x, axis, m):
    """``x`` with ``axis`` laid out as ``m`` back-to-back windows of one size, and that size: the
    axis itself where ``m`` divides it, else each window gathered and padded with its last index.

    With m <= n the windows' starts and ends both increase strictly, so the m indices at one
    offset into the padded windows are distinct; with m > n they may repeat, and the general
    index selection (which sums repeats) gathers."""
    n = x.shape[axis]
    if n % m == 0:
        return x, n // m
    idx = _constant("max", n, m, x)
    k = idx.shape[0] // m
    if m > n:
        return index_select(x, axis, idx), k
    return apply(GatherWindows, x, idx=idx.array.reshape(m, k), axis=axis, n=n), k


def _adaptive_max(x, output_size, d, what):
    """The windows made tiles of one size per axis (see :func:`_tiles`), then one max pooling with
    kernel = stride = that size: its kernels, and its first maximum (row-major) for the gradient."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: input must be a Tensor, got {type(x).__name__}")
    out = _output_size(x, output_size, d, what)
    batched = x.ndim == d + 2
    if not batched:
        x = expand_dims(x, 0)
    if d == 1:
        x = expand_dims(x, 2)
        out = (1,) + out
    kernel = []
    for axis, m in zip((2, 3), out):
        x, k = _tiles(x, axis, m)
        kernel.append(k)
    y = max_pool2d(x, tuple(kernel), tuple(kernel))
    if d == 1:
        y = squeeze(y, 2)
    return y if batched else y[0]


def _output_size(x, output_size, d, what):
    if x.ndim not in (d + 1, d + 2):
        names = "(N, C, L) or (C, L)" if d == 1 else "(N, C, H, W) or (C, H, W)"
        raise ValueError(f"{what} expects input of shape {names}, got {x.shape}")
    sizes = (output_size,) * d if output_size is None or isinstance(output_size, (int, np.integer)) \
        else tuple(output_size)
    if len(sizes) != d:
        raise ValueError(f"{what}: output_size must be an int or a {d}-tuple (None keeps a size), "
                         f"got {output_size!r}")
    spatial = x.shape[x.ndim - d:]
    out = tuple(int(n) if s is None else int(s) for s, n in zip(sizes, spatial))
    if any(s < 1 for s in out) or any(n < 1 for n in spatial):
        raise ValueError(f"{what}: output_size {out} and the input's spatial size {spatial} must be positive "
                         f"(input {x.shape})")
    return out


def _adaptive_avg(x, output_size, d, what):
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: input must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{what}: input must be floating point, got dtype {x.dtype} (shape {x.shape})")
    out = _output_size(x, output_size, d, what)
    for k in range(d):  # the last axis first (see the module docstring)
        axis = x.ndim - 1 - k
        x = _avg_axis(x, axis, out[d - 1 - k])
    return x


def adaptive_avg_pool1d(x, output_size):
    """Mean over PyTorch's adaptive windows of (N, C, L) or (C, L) input, to length ``output_size``."""
    return _adaptive_avg(x, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(x, output_size):
    """Mean over PyTorch's adaptive windows of (N, C, H, W) or (C, H, W) input; ``output_size`` is
    an int or an (H, W) pair, a ``None`` entry keeping that size."""
    return _adaptive_avg(x, output_size, 2, "adaptive_avg_pool2d")


def adaptive_max_pool1d(x, output_size):
    """Max over PyTorch's adaptive windows of (N, C, L) or (C, L) input; the first maximum of each
    window takes the gradient."""
    return _adaptive_max(x, output_size, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d(x, output_size):
    """Max over PyTorch's adaptive windows of (N, C, H, W) or (C, H, W) input; the first maximum
    of each window (row-major) takes the gradient."""
    return _adaptive_max(x, output_size, 2, "adaptive_max_pool2d")


__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"]
