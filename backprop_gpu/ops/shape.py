"""Shape ops and indexing, forward beside VJP."""
from __future__ import annotations

import numbers

from ..array.namespace import is_basic_index
from ..tape.op import Op, apply, normalize_axis, share_version_if_view
from ..tape.tensor import Tensor, plain_key


class Reshape(Op):
    name = "reshape"
    saves = ()
    forward = staticmethod(lambda F, x, shape: x.reshape(shape))
    vjp = staticmethod(lambda F, g, out, x, shape: (F.reshape(g, x.shape),))


class Transpose(Op):
    name = "transpose"
    saves = ()
    forward = staticmethod(lambda F, x, axes: F.transpose(x, axes))

    @staticmethod
    def vjp(F, g, out, x, axes):
        inverse = [0] * len(axes)
        for i, a in enumerate(axes):
            inverse[a] = i
        return (F.transpose(g, tuple(inverse)),)


class BroadcastTo(Op):
    name = "broadcast_to"
    saves = ()
    forward = staticmethod(lambda F, x, shape: F.broadcast_view(x, shape))
    vjp = staticmethod(lambda F, g, out, x, shape: (g,))  # the engine sums g back to x's shape


class GetItem(Op):
    """``x[key]``: basic slicing and integer-array indexing; backward scatter-adds.

    ``key`` keeps its index tensors, so the engine version-checks them: an index changed
    in place between forward and backward is an error, not a wrong gradient."""
    name = "getitem"
    saves = ()
    forward = staticmethod(lambda F, x, key: x[plain_key(key)])

    @staticmethod
    def vjp(F, g, out, x, key, needs, into):
        if F.records:
            return (F.index_backward(g, x.shape, key),)
        dst = into and into[0]  # x's empty gradient slot (an Embedding's weight): scattered straight into
        return (F.index_backward(g, x.shape, plain_key(key), None if dst is None or dst.dtype != g.dtype else dst),)


class IndexBackward(Op):
    """Scatter-add ``g`` into zeros of ``shape`` at ``key``; the VJP of getitem and vice versa."""
    name = "index_backward"
    saves = ()

    @staticmethod
    def forward(F, g, shape, key, scatter_add):
        key = plain_key(key)
        out = F.zeros(shape, dtype=g.dtype)
        if is_basic_index(key):
            out[key] = g
        else:
            scatter_add(out, key, g)
        return out

    vjp = staticmethod(lambda F, gg, out, g, shape, key, scatter_add: (gg[plain_key(key)],))


def reshape(x, shape, *more):
    """``x`` with a new shape (one entry may be -1)."""
    if more or isinstance(shape, numbers.Integral):
        shape = (shape,) + more
    shape = tuple(int(s) for s in shape)
    n_known = 1
    for s in shape:
        if s != -1:
            n_known *= s
    size = x.numel()
    if shape.count(-1) > 1 or (-1 not in shape and n_known != size) or \
            (-1 in shape and (n_known == 0 or size % n_known)):
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({size} elements) into {shape}")
    if shape == x.shape:
        return x
    return share_version_if_view(apply(Reshape, x, shape=shape), x)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim..end_dim`` into one."""
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = start_dim % x.ndim, end_dim % x.ndim
    n = 1
    for d in x.shape[s:e + 1]:
        n *= d
    return reshape(x, x.shape[:s] + (n,) + x.shape[e + 1:])


def transpose(x, axes=None, *more):
    """Permute axes (reversed when ``axes`` is None), like ``numpy.transpose``.

    The axes may also come unpacked, as NumPy's method takes them (``x.transpose(2, 0, 1)``),
    except that exactly two are swapped, as ``torch.transpose(x, dim0, dim1)``: the same as
    NumPy's ``x.transpose(1, 0)`` on a matrix, but ``x.transpose(0, 1)`` swaps too.
    """
    if more:
        if len(more) == 1:
            return swapaxes(x, axes, more[0])
        axes = (axes,) + more
    if axes is None:
        axes = tuple(range(x.ndim))[::-1]
    axes, nd = tuple(axes), x.ndim
    if any(not -nd <= a < nd for a in axes) or sorted(a % nd for a in axes) != list(range(nd)):
        raise ValueError(f"axes {axes} are not a permutation of the axes of a tensor of shape {x.shape}")
    axes = tuple(a % nd for a in axes)
    return share_version_if_view(apply(Transpose, x, axes=axes), x)


def permute(x, *dims):
    """PyTorch's name for :func:`transpose` with explicit axes."""
    if len(dims) == 1 and not isinstance(dims[0], numbers.Integral):
        dims = tuple(dims[0])
    return transpose(x, dims)


def swapaxes(x, a, b):
    """Exchange two axes."""
    a, b = normalize_axis(a, x.ndim)[0], normalize_axis(b, x.ndim)[0]
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, tuple(axes))


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape`` (a read-only expansion; gradients sum back)."""
    shape = tuple(shape)
    if shape == x.shape:
        return x
    try:
        x.backend.xp.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ValueError(f"cannot broadcast a tensor of shape {x.shape} to {shape}") from None
    return share_version_if_view(apply(BroadcastTo, x, shape=shape), x)


def expand(x, *shape):
    """PyTorch's ``expand``: -1 keeps an axis."""
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    if lead < 0 or any(s == -1 for s in shape[:lead]):
        raise ValueError(f"cannot expand a tensor of shape {x.shape} to {shape}: -1 is only allowed "
                         "for existing axes, and the new shape needs at least as many axes")
    shape = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    return broadcast_to(x, shape)


def squeeze(x, axis=None):
    """Drop size-1 axes (all of them, or those in ``axis``)."""
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axis(axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise ValueError(f"cannot squeeze axis {bad[0]} of shape {x.shape}: its size is not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def expand_dims(x, axis):
    """Insert size-1 axes at ``axis`` (int or tuple), like ``numpy.expand_dims``."""
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    nd = x.ndim + len(axes)
    axes = sorted(a % nd for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


unsqueeze = expand_dims


def getitem(x, key):
    """``x[key]``; gradients of repeated integer indices accumulate.

    Basic indexing (slices, integers, None, Ellipsis) gives a view sharing ``x``'s storage
    and version counter, a single element included (``x[1, 2]`` is a 0-d view, as in PyTorch,
    where NumPy would copy it out as a scalar); integer-array indexing gives a copy.
    """
    k = key
    if isinstance(k, list):
        k = plain_key(k)
    if type(k) is int:
        k = (k, Ellipsis)
    elif type(k) is tuple and k and all(type(i) is int for i in k):
        k = k + (Ellipsis,)  # a trailing ... keeps NumPy from returning a scalar copy
    try:
        return share_version_if_view(apply(GetItem, x, key=k), x)
    except IndexError as e:
        raise IndexError(f"index {key!r} is invalid for a tensor of shape {x.shape}: {e}") from None


def index_backward(g, shape, key):
    """Zeros of ``shape`` with ``g`` scatter-added at ``key`` (differentiable in ``g``)."""
    return apply(IndexBackward, g, shape=tuple(shape), key=key, scatter_add=g.backend.scatter_add)


def t(x):
    """``torch.t``: a matrix transposed; 0-d and 1-D tensors unchanged."""
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with at most 2 dimensions, got shape {x.shape}; "
                           "use transpose(dim0, dim1) or permute")
    return x if x.ndim < 2 else swapaxes(x, 0, 1)


def narrow(x, dim, start, length):
    """``torch.narrow``: a view of ``length`` entries from ``start`` along ``dim``."""
    ax = normalize_axis(dim, x.ndim)[0]
    n = x.shape[ax]
    start = int(start) + (n if start < 0 else 0)
    if not 0 <= start <= n or length < 0 or start + length > n:
        raise IndexError(f"narrow: start {start} and length {length} are out of range for dimension {dim} "
                         f"of size {n}")
    return getitem(x, (slice(None),) * ax + (slice(start, start + int(length)),))
