"""Joining and splitting: concatenate, stack, split, pad."""
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


def split(x, indices_or_sections, axis=0):
    """Split along ``axis`` as ``numpy.split``: a count of equal parts, or the split indices."""
    ax = normalize_axis(axis, x.ndim)[0]
    n = x.shape[ax]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"cannot split an axis of size {n} into {k} equal parts")
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    lead = (slice(None),) * ax
    return [x[lead + (slice(a, b),)] for a, b in zip(bounds[:-1], bounds[1:])]


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
