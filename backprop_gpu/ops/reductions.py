"""Reductions along axes, forward beside VJP."""
from __future__ import annotations

from ..tape.tensor import Tensor
from ..tape.op import Op, apply, normalize_axis
from .elementwise import exp, log, sqrt
from .shape import squeeze


def _expand_to(F, g, x_shape, axis, keepdims):
    """Broadcast a reduced gradient back over the reduced axes of ``x_shape``."""
    if not keepdims and g.ndim:
        g = F.reshape(g, tuple(1 if i in axis else n for i, n in enumerate(x_shape)))
    return F.broadcast_to(g, x_shape)


class Sum(Op):
    name = "sum"
    saves = ()
    # axis=None when reducing everything: NumPy's fast path for a full reduction
    forward = staticmethod(lambda F, x, axis, keepdims: x.sum(axis=None if len(axis) == x.ndim else axis,
                                                               keepdims=keepdims))

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims, needs):
        return (_expand_to(F, g, x.shape, axis, keepdims),)


class SumAll(Op):
    """``x.sum()`` to a 0-d result: :class:`Sum` without its axis bookkeeping (the usual loss)."""
    name = "sum"
    saves = ()
    forward = staticmethod(lambda F, x: x.sum())
    vjp = staticmethod(lambda F, g, out, x, needs: (F.broadcast_to(g, x.shape),))


class Mean(Op):
    name = "mean"
    saves = ()
    forward = staticmethod(lambda F, x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims))

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims, needs):
        n = 1
        for a in axis:
            n *= x.shape[a]
        return (_expand_to(F, g / n, x.shape, axis, keepdims),)


class _Extreme(Op):
    """max/min: the gradient goes to the extreme entries, split evenly among ties."""
    saves = ("x", "out")

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims, needs):
        ref = out if keepdims else F.reshape(out, tuple(1 if i in axis else n for i, n in enumerate(x.shape)))
        hit = x == ref
        gx = _expand_to(F, g, x.shape, axis, keepdims)
        count = F.sum(hit, axis=axis, keepdims=True).astype(gx.dtype)
        return (F.where(hit, gx / count, 0),)


class Max(_Extreme):
    name = "max"
    forward = staticmethod(lambda F, x, axis, keepdims: F.max(x, axis=axis, keepdims=keepdims))


class Min(_Extreme):
    name = "min"
    forward = staticmethod(lambda F, x, axis, keepdims: F.min(x, axis=axis, keepdims=keepdims))


class _ArgExtreme(Op):
    differentiable = False


class Argmax(_ArgExtreme):
    name = "argmax"
    forward = staticmethod(lambda F, x, axis, keepdims: F.argmax(x, axis=axis, keepdims=keepdims))


class Argmin(_ArgExtreme):
    name = "argmin"
    forward = staticmethod(lambda F, x, axis, keepdims: F.argmin(x, axis=axis, keepdims=keepdims))


def _reduce(op, x, axis, keepdims):
    if x.ndim == 0:
        axis = ()
    return apply(op, x, axis=normalize_axis(axis, x.ndim), keepdims=bool(keepdims))


def sum(x, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """Sum over ``axis`` (None: all axes; int or tuple)."""
    if axis is None and not keepdims:
        return apply(SumAll, x)
    return _reduce(Sum, x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis``."""
    return _reduce(Mean, x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum over ``axis``; ties share the gradient equally."""
    _nonempty(x, "max")
    return _reduce(Max, x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    """Minimum over ``axis``; ties share the gradient equally."""
    _nonempty(x, "min")
    return _reduce(Min, x, axis, keepdims)


def _nonempty(x, what):
    if x.size == 0:
        raise ValueError(f"{what} of an empty tensor of shape {x.shape}")


def argmax(x, axis=None, keepdims=False):
    """Index of the maximum (int64, not differentiable)."""
    _nonempty(x, "argmax")
    return apply(Argmax, x, axis=axis, keepdims=keepdims)


def argmin(x, axis=None, keepdims=False):
    """Index of the minimum (int64, not differentiable)."""
    _nonempty(x, "argmin")
    return apply(Argmin, x, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, correction=1):
    """Variance with ``correction`` (Bessel's, 1, by default as in PyTorch; 0 for NumPy's)."""
    axes = normalize_axis(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    if n - correction <= 0:
        raise ValueError(f"var over {n} element(s) with correction={correction} is undefined")
    d = x - mean(x, axis=axes, keepdims=True)
    return sum(d * d, axis=axes, keepdims=keepdims) / (n - correction)


def std(x, axis=None, keepdims=False, correction=1):
    """Standard deviation, sqrt(var)."""
    return sqrt(var(x, axis=axis, keepdims=keepdims, correction=correction))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) along ``axis``, shifted by the max so it never overflows."""
    axes = normalize_axis(axis, x.ndim)
    _nonempty(x, "logsumexp")
    # The shift is a constant (its gradient cancels), so it is taken on the arrays, unrecorded.
    # Where the max is infinite the shift is 0, so all -inf gives -inf and +inf gives +inf (not NaN).
    xp = x.backend.xp
    m = xp.max(x.array, axis=axes, keepdims=True)
    m = Tensor._make(xp.asarray(xp.where(xp.isfinite(m), m, 0), dtype=x.dtype), x.backend)
    out = log(sum(exp(x - m), axis=axes, keepdims=True)) + m
    if not keepdims:
        out = squeeze(out, axis=axes)
    return out
