"""PyTorch's indexing ops, as index keys for :func:`~backprop_gpu.ops.shape.getitem`: gather,
index_select, take_along_dim, masked_fill, topk and sort.

Each builds the integer-array key that picks its elements and lets ``getitem`` do the rest, so
the gradient (a scatter-add, repeats summed) and the version check of the index come from the
one op that already has them.
"""
from __future__ import annotations

import numbers

from ..tape.op import constant_like, normalize_axis
from ..tape.tensor import Tensor
from . import return_types
from .elementwise import where
from .shape import getitem


def _dim(x, dim, what):
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"{what}: dim must be an int, got {dim!r}")
    return normalize_axis(dim, max(x.ndim, 1))[0]


def _index_tensor(index, x, what):
    if not isinstance(index, Tensor):
        index = Tensor._make(x.backend.asarray(index), x.backend)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{what}: the index must be an integer tensor, got dtype {index.dtype}")
    if index.device != x.device:
        raise RuntimeError(f"{what}: index on {index.device} but input on {x.device}")
    return index


def _along(x, d, index):
    """The key ``x[i_0, .., index, .., i_last]`` with the other positions as broadcasting aranges
    over ``index``'s shape: ``out[i][j] = x[i][index[i][j]]`` for ``d = 1``."""
    xp = x.backend.xp
    key = []
    for i, n in enumerate(index.shape):
        if i == d:
            key.append(index)
        else:
            key.append(Tensor._make(xp.arange(n).reshape([n if k == i else 1 for k in range(index.ndim)]),
                                    x.backend))
    return tuple(key)


def gather(input, dim, index):  # noqa: A002 - PyTorch's name
    """``torch.gather``: ``out[i][j] = input[index[i][j]][j]`` along ``dim`` 0 (and so on); the
    gradient scatter-adds back, repeated indices summed."""
    index = _index_tensor(index, input, "gather")
    d = _dim(input, dim, "gather")
    if index.ndim != input.ndim:
        raise RuntimeError(f"gather: index of shape {index.shape} must have as many dimensions as the input "
                           f"of shape {input.shape}")
    for i, (m, n) in enumerate(zip(index.shape, input.shape)):
        if i != d and m > n:
            raise RuntimeError(f"gather: index of shape {index.shape} is larger than the input of shape "
                               f"{input.shape} in dimension {i}")
    return getitem(input, _along(input, d, index))


take_along_dim = gather  # same semantics when the index has the input's rank


def index_select(input, dim, index):  # noqa: A002
    """``torch.index_select``: the entries of ``input`` at the 1-D ``index`` along ``dim``."""
    index = _index_tensor(index, input, "index_select")
    if index.ndim > 1:
        raise IndexError(f"index_select: index must be 0- or 1-D, got shape {index.shape}")
    d = _dim(input, dim, "index_select")
    return getitem(input, (slice(None),) * d + (index.reshape(-1),))


def masked_fill(input, mask, value):  # noqa: A002
    """``torch.masked_fill``: ``value`` where the boolean ``mask`` (broadcast to ``input``) is true."""
    if not isinstance(mask, Tensor):
        mask = Tensor._make(input.backend.asarray(mask), input.backend)
    if mask.dtype.kind != "b":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got dtype {mask.dtype}")
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
    return where(mask, constant_like(value, input) if not isinstance(value, Tensor) else value, input)


def _order(x, dim, descending):
    """Indices that sort ``x`` along ``dim``, stably (ties keep their order)."""
    xp = x.backend.xp
    a = x.array
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable")
    # negate, keeping integer extremes in range; a stable sort of -x keeps ties in order
    if a.dtype.kind in "iub":
        return xp.argsort(-a.astype(xp.float64), axis=dim, kind="stable")
    # NaN counts as the largest value (PyTorch's order), so it leads a descending sort: a second,
    # stable sort on "is not NaN" moves the NaNs to the front and keeps the rest in order
    order = xp.argsort(-a, axis=dim, kind="stable")
    nan_last = ~xp.isnan(xp.take_along_axis(a, order, axis=dim))
    return xp.take_along_axis(order, xp.argsort(nan_last, axis=dim, kind="stable"), axis=dim)


def sort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    """``torch.sort``: the named tuple ``(values, indices)``; values are differentiable."""
    if input.ndim == 0:
        return return_types.sort(input.clone(), Tensor._make(input.backend.xp.zeros((), "int64"), input.backend))
    d = _dim(input, dim, "sort")
    idx = Tensor._make(_order(input, d, descending).astype("int64", copy=False), input.backend)
    return return_types.sort(gather(input, d, idx), idx)


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    """``torch.topk``: the ``k`` largest (or smallest) entries along ``dim`` and their indices,
    sorted; the named tuple ``(values, indices)``."""
    d = _dim(input, dim, "topk")
    n = input.shape[d] if input.ndim else 1
    if not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise RuntimeError(f"topk: k={k!r} is out of range for dimension {dim} of size {n}")
    if input.ndim == 0:
        return return_types.topk(input.clone(), Tensor._make(input.backend.xp.zeros((), "int64"), input.backend))
    order = _order(input, d, largest)
    idx = Tensor._make(order[(slice(None),) * d + (slice(0, int(k)),)].astype("int64", copy=False), input.backend)
    return return_types.topk(gather(input, d, idx), idx)


__all__ = ["gather", "take_along_dim", "index_select", "masked_fill", "sort", "topk"]
