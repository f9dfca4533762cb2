"""PyTorch's rearranging ops, composed from recorded ones (so their gradients come for free):
flip, roll, repeat, unflatten, tril, triu, outer, argsort, isclose, nonzero."""
from __future__ import annotations

import numbers

from ..tape.op import constant_like, normalize_axis
from ..tape.tensor import Tensor
from .elementwise import multiply
from .indexing import sort
from .joining import concatenate
from .shape import expand, expand_dims, getitem, reshape


def _dims(x, dims, what):
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    return normalize_axis(dims, x.ndim) if dims else ()


def flip(x, dims):
    """``torch.flip``: ``x`` reversed along each of ``dims`` (a view)."""
    axes = _dims(x, dims, "flip")
    return getitem(x, tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(x.ndim)))


def roll(x, shifts, dims=None):
    """``torch.roll``: entries shifted by ``shifts`` along ``dims``, wrapping around; with ``dims``
    None, along the flattened tensor (then reshaped back)."""
    if dims is None:
        return reshape(roll(reshape(x, (-1,)), shifts, 0), x.shape)
    shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    out = x
    for s, d in zip(shifts, dims):
        d = normalize_axis(d, x.ndim)[0]
        n = x.shape[d]
        k = int(s) % n if n else 0
        if k:
            lead = (slice(None),) * d
            out = concatenate([getitem(out, lead + (slice(n - k, None),)), getitem(out, lead + (slice(0, n - k),))],
                              dim=d)
    return out


def repeat(x, *sizes):
    """``torch.Tensor.repeat``: ``x`` tiled ``sizes[i]`` times along each dimension (``sizes`` may be
    longer than ``x.ndim``: leading dimensions are added)."""
    if len(sizes) == 1 and not isinstance(sizes[0], numbers.Integral):
        sizes = tuple(sizes[0])
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < x.ndim:
        raise RuntimeError(f"repeat: {len(sizes)} repeat sizes for a tensor of {x.ndim} dimensions; give at "
                           f"least {x.ndim}")
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"repeat: sizes {sizes} must be non-negative")
    shape = (1,) * (len(sizes) - x.ndim) + tuple(x.shape)
    y = reshape(x, shape)
    # (s0, s1, ...) -> (1, s0, 1, s1, ...) -> expand to (r0, s0, r1, s1, ...) -> merge each pair
    for i in range(len(shape)):
        y = expand_dims(y, 2 * i)
    y = expand(y, tuple(v for r, s in zip(sizes, shape) for v in (r, s)))
    return reshape(y, tuple(r * s for r, s in zip(sizes, shape)))


def unflatten(x, dim, sizes):
    """``torch.unflatten``: dimension ``dim`` split into ``sizes`` (one may be -1)."""
    d = normalize_axis(dim, x.ndim)[0]
    return reshape(x, tuple(x.shape[:d]) + tuple(sizes) + tuple(x.shape[d + 1:]))


def _triangle(x, diagonal, lower, what):
    if x.ndim < 2:
        raise RuntimeError(f"{what}: expected a tensor of at least 2 dimensions, got shape {x.shape}")
    xp = x.backend.xp
    n, m = x.shape[-2:]
    keep = xp.tri(n, m, k=diagonal, dtype=bool) if lower else ~xp.tri(n, m, k=diagonal - 1, dtype=bool)
    return multiply(x, Tensor._make(keep.astype(x.dtype), x.backend))


def tril(x, diagonal: int = 0):
    """``torch.tril``: the lower triangle (and ``diagonal`` diagonals above it) of the last two dims."""
    return _triangle(x, int(diagonal), True, "tril")


def triu(x, diagonal: int = 0):
    """``torch.triu``: the upper triangle (from ``diagonal``) of the last two dims."""
    return _triangle(x, int(diagonal), False, "triu")


def outer(a, b):
    """``torch.outer``: the outer product of two vectors."""
    if not isinstance(a, Tensor):
        a = constant_like(a, b)
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"outer: expected two 1-D tensors, got shapes {a.shape} and {b.shape}")
    return multiply(expand_dims(a, 1), expand_dims(b, 0))


def argsort(x, dim: int = -1, descending: bool = False, stable: bool = False):
    """``torch.argsort``: the indices :func:`sort` orders ``x`` by."""
    return sort(x, dim, descending).indices


def isclose(a, b, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False):
    """``torch.isclose``: elementwise ``|a - b| <= atol + rtol * |b|`` (a bool tensor)."""
    xp = a.backend.xp
    other = b.array if isinstance(b, Tensor) else b
    return Tensor._make(xp.isclose(a.array, other, rtol=rtol, atol=atol, equal_nan=equal_nan), a.backend)


def nonzero(x, *, as_tuple: bool = False):
    """``torch.nonzero``: the (n, ndim) int64 indices of the nonzero entries, or with ``as_tuple`` one
    1-D index tensor per dimension."""
    idx = x.backend.xp.nonzero(x.array)
    parts = [Tensor._make(i.astype("int64"), x.backend) for i in idx]
    if as_tuple:
        return tuple(parts)
    xp = x.backend.xp
    return Tensor._make(xp.stack([p.array for p in parts], axis=1) if parts else xp.zeros((0, 0), "int64"),
                        x.backend)


__all__ = ["flip", "roll", "repeat", "unflatten", "tril", "triu", "outer", "argsort", "isclose", "nonzero"]
