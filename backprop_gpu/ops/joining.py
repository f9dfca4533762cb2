"""Joining and splitting: concatenate, stack, split, chunk, unbind, pad."""
from __future__ import annotations

import numbers

from ..tape.op import DeviceMismatchError, Op, alias, apply, normalize_axis


class Concatenate(Op):
    name = "concatenate"
    saves = ()
    forward = staticmethod(lambda F, *xs, axis: F.concatenate(xs, axis=axis))

    @staticmethod
    def vjp(F, g, out, *xs, axis):
        grads, start = [], 0
        lead = (slice(None),) * axis
        for x in xs:
            stop = start + x.shape[axis]
            grads.append(g[lead + (slice(start, stop),)])
            start = stop
        return tuple(grads)


class Stack(Op):
    name = "stack"
    saves = ()
    forward = staticmethod(lambda F, *xs, axis: F.stack(xs, axis=axis))

    @staticmethod
    def vjp(F, g, out, *xs, axis):
        lead = (slice(None),) * axis
        return tuple(g[lead + (i,)] for i in range(len(xs)))


class Pad(Op):
    name = "pad"
    saves = ()
    forward = staticmethod(lambda F, x, pad_width, value: F.pad(x, pad_width, constant_values=value))

    @staticmethod
    def vjp(F, g, out, x, pad_width, value):
        return (g[tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))],)


def _check_same(tensors, what, axis):
    if not tensors:
        raise ValueError(f"{what} needs at least one tensor")
    dev = tensors[0].device
    for t in tensors:
        if t.device != dev:
            raise DeviceMismatchError(f"{what}: tensors on different devices: {dev} and {t.device}")


def concatenate(tensors, dim=None, *, axis=None):
    """Join tensors along an existing dimension (``dim``, or NumPy's ``axis``; default 0)."""
    axis = alias("cat", dim, "dim", axis, "axis", 0)
    tensors = list(tensors)
    _check_same(tensors, "concatenate", axis)
    ax = normalize_axis(axis, tensors[0].ndim)[0]
    ref = tensors[0].shape
    for t in tensors:
        if t.ndim != len(ref) or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref)) if i != ax):
            raise ValueError(f"concatenate along axis {ax}: shapes {[x.shape for x in tensors]} differ off that axis")
    return apply(Concatenate, *tensors, axis=ax)


cat = concatenate


def stack(tensors, dim=None, *, axis=None):
    """Join same-shaped tensors along a new dimension (``dim``, or NumPy's ``axis``; default 0)."""
    axis = alias("stack", dim, "dim", axis, "axis", 0)
    tensors = list(tensors)
    _check_same(tensors, "stack", axis)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack needs equal shapes, got {[t.shape for t in tensors]}")
    ax = normalize_axis(axis, tensors[0].ndim + 1)[0]
    return apply(Stack, *tensors, axis=ax)


def split(x, split_size_or_sections, dim=None, *, axis=None):
    """``torch.split``: pieces of ``split_size_or_sections`` entries along ``dim`` (an int: that
    size each, the last one smaller if need be; a list: those sizes, which must add up to the
    dimension's size). Each piece is a view."""
    ax = normalize_axis(alias("split", dim, "dim", axis, "axis", 0), x.ndim)[0]
    n = x.shape[ax]
    if isinstance(split_size_or_sections, numbers.Integral):
        k = int(split_size_or_sections)
        if k <= 0 and not (k == 0 and n == 0):
            raise ValueError(f"split: split_size must be a positive integer, got {k}")
        sizes = [min(k, n - i) for i in range(0, n, k)] if n else [0]
    else:
        sizes = [int(v) for v in split_size_or_sections]
        if any(v < 0 for v in sizes) or sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} must be non-negative and add up to {n}, the size of "
                             f"dimension {ax} of a tensor of shape {x.shape}")
    lead = (slice(None),) * ax
    out, start = [], 0
    for v in sizes:
        out.append(x[lead + (slice(start, start + v),)])
        start += v
    return tuple(out)


def chunk(x, chunks, dim=0):
    """``torch.chunk``: at most ``chunks`` views of ``ceil(size / chunks)`` entries along ``dim``."""
    if not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive integer, got {chunks!r}")
    n = x.shape[normalize_axis(dim, x.ndim)[0]]
    return split(x, max(-(-n // int(chunks)), 1), dim)


def unbind(x, dim=0):
    """``torch.unbind``: the slices along ``dim``, that dimension removed."""
    ax = normalize_axis(dim, x.ndim)[0]
    lead = (slice(None),) * ax
    return tuple(x[lead + (i,)] for i in range(x.shape[ax]))


def pad(x, pad_width, value=0.0):
    """Constant padding, ``pad_width`` as in ``numpy.pad`` (an int, a pair, or a pair per axis)."""
    if isinstance(pad_width, numbers.Integral):
        pw = ((int(pad_width), int(pad_width)),) * x.ndim
    else:
        pw = tuple(pad_width)
        if len(pw) == 2 and all(isinstance(p, numbers.Integral) for p in pw):
            pw = (tuple(pw),) * x.ndim
        pw = tuple((int(a), int(b)) for a, b in pw)
    if len(pw) != x.ndim or any(a < 0 or b < 0 for a, b in pw):
        raise ValueError(f"pad_width {pad_width!r} does not fit a tensor of shape {x.shape}")
    return apply(Pad, x, pad_width=pw, value=value)
