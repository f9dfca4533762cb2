"""Reductions along axes, forward beside VJP."""
from __future__ import annotations

import numbers

from ..tape.tensor import Tensor
from ..tape.op import Op, alias, apply, normalize_axis
from . import return_types
from .elementwise import abs as abs_, exp, log, maximum, minimum
from .indexing import gather
from .joining import concatenate
from .shape import expand_dims, getitem, reshape, squeeze


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
    def vjp(F, g, out, x, axis, keepdims):
        return (_expand_to(F, g, x.shape, axis, keepdims),)


class SumAll(Op):
    """``x.sum()`` to a 0-d result: :class:`Sum` without its axis bookkeeping (the usual loss)."""
    name = "sum"
    saves = ()
    forward = staticmethod(lambda F, x: x.sum())
    vjp = staticmethod(lambda F, g, out, x: (F.broadcast_to(g, x.shape),))


class Mean(Op):
    name = "mean"
    saves = ()
    forward = staticmethod(lambda F, x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims))

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims):
        n = 1
        for a in axis:
            n *= x.shape[a]
        return (_expand_to(F, g / n, x.shape, axis, keepdims),)


class _Extreme(Op):
    """max/min: the gradient goes to the extreme entries, split evenly among ties."""
    saves = ("x", "out")

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims):
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


class _NotDifferentiable(Op):
    """Indices and truth values: recorded nowhere, their outputs are constants."""
    differentiable = False


class Argmax(_NotDifferentiable):
    name = "argmax"
    forward = staticmethod(lambda F, x, axis, keepdims: F.argmax(x, axis=axis, keepdims=keepdims))


class Argmin(_NotDifferentiable):
    name = "argmin"
    forward = staticmethod(lambda F, x, axis, keepdims: F.argmin(x, axis=axis, keepdims=keepdims))


def _reduce(op, x, axis, keepdims):
    if x.ndim == 0:
        axis = ()
    return apply(op, x, axis=normalize_axis(axis, x.ndim), keepdims=bool(keepdims))


#: PyTorch's reductions whose ``dim=()`` (an empty list of dims) reduces over every dimension
_EMPTY_DIM_IS_ALL = {"sum", "mean", "amax", "amin", "var"}


def _dims(what, dim, keepdim, axis, keepdims):
    """PyTorch's ``dim``/``keepdim`` or NumPy's ``axis``/``keepdims``, as (axis, keepdims). NumPy's
    ``axis=()`` reduces nothing; PyTorch's ``dim=()`` reduces everything for these reductions."""
    if what in _EMPTY_DIM_IS_ALL and isinstance(dim, (tuple, list)) and len(dim) == 0:
        dim = None
    return alias(what, dim, "dim", axis, "axis"), bool(alias(what, keepdim, "keepdim", keepdims, "keepdims", False))


def sum(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001 - PyTorch's name
    """Sum over ``dim`` (None: all dimensions; int or tuple)."""
    if dim is None and keepdim is None and axis is None and keepdims is None:  # x.sum(), the usual loss
        return apply(SumAll, x)
    axis, keepdims = _dims("sum", dim, keepdim, axis, keepdims)
    if axis is None and not keepdims:
        return apply(SumAll, x)
    return _reduce(Sum, x, axis, keepdims)


def mean(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Mean over ``dim``."""
    return _reduce(Mean, x, *_dims("mean", dim, keepdim, axis, keepdims))


def amax(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Maximum over ``dim`` (int or tuple; None: all); ties share the gradient equally, as in PyTorch."""
    axis, keepdims = _dims("amax", dim, keepdim, axis, keepdims)
    _nonempty(x, "amax", axis)
    return _reduce(Max, x, axis, keepdims)


def amin(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Minimum over ``dim`` (int or tuple; None: all); ties share the gradient equally."""
    axis, keepdims = _dims("amin", dim, keepdim, axis, keepdims)
    _nonempty(x, "amin", axis)
    return _reduce(Min, x, axis, keepdims)


def _extreme_along(what, x, dim, keepdims, arg):
    """PyTorch's ``max(x, dim)``: the first extreme's index along ``dim``, and the values
    there as ``x[index]``, so the gradient goes to that one entry (not split among ties)."""
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"{what}(dim=...) takes one int dimension, got {dim!r}; amax/amin reduce over several")
    (d,) = normalize_axis(dim, x.ndim)
    if x.ndim and x.shape[d] == 0:
        raise IndexError(f"{what}(): cannot reduce dimension {dim} of size 0 (shape {x.shape})")
    xp = x.backend.xp
    if x.ndim == 0:
        return getattr(return_types, what)(x.clone(), Tensor._make(xp.zeros((), dtype=xp.int64), x.backend))
    idx = arg(x.array, axis=d)
    # x[i_0, .., idx, .., i_last] with the other indices as broadcasting aranges
    shape = [n for i, n in enumerate(x.shape) if i != d]
    key = []
    for i, n in enumerate(x.shape):
        if i == d:
            key.append(idx)
        else:
            j = i - (i > d)
            key.append(xp.arange(n).reshape([n if k == j else 1 for k in range(len(shape))]))
    values = x[tuple(key)]
    if keepdims:
        values, idx = expand_dims(values, d), xp.expand_dims(idx, d)
    return getattr(return_types, what)(values, Tensor._make(idx.astype(xp.int64, copy=False), x.backend))


def _max_or_min(what, reduce, pairwise, arg):
    def f(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
        axis, keepdims = _dims(what, dim, keepdim, axis, keepdims)
        if isinstance(axis, Tensor):
            return pairwise(x, axis)
        if axis is None:
            if keepdims:
                raise TypeError(f"{what}() with keepdim=True needs a dim")
            _nonempty(x, what)
            return reduce(x)
        return _extreme_along(what, x, axis, keepdims, arg)
    return f


max = _max_or_min("max", amax, maximum, lambda a, axis: a.argmax(axis=axis))
max.__doc__ = """PyTorch's ``max``: ``max(x)`` is the largest element (ties share the gradient);
    ``max(x, dim, keepdim=False)`` is the named tuple ``(values, indices)`` along ``dim``, the
    first maximum's index; ``max(x, other)`` is :func:`maximum`."""
min = _max_or_min("min", amin, minimum, lambda a, axis: a.argmin(axis=axis))
min.__doc__ = """PyTorch's ``min``: as :func:`max`, for the smallest element."""
max.__name__, min.__name__ = "max", "min"


def _nonempty(x, what, axis=None, error=ValueError):
    """Refuse a reduction with no identity over nothing: over all of an empty tensor, or over
    a dimension of size 0 (reducing an empty tensor along a non-empty dimension is fine).
    Over a named dimension it is an IndexError, as in PyTorch."""
    if x.numel() == 0 and (axis is None or 0 in [x.shape[a] for a in normalize_axis(axis, x.ndim)]):
        raise (error if axis is None else IndexError)(
            f"{what} of an empty tensor of shape {x.shape}" + ("" if axis is None else f" over dim {axis}"))


def argmax(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Index of the first maximum along ``dim`` (None: of the flattened tensor); int64, not differentiable."""
    axis, keepdims = _dims("argmax", dim, keepdim, axis, keepdims)
    _nonempty(x, "argmax", axis, IndexError)  # PyTorch: IndexError
    return apply(Argmax, x, axis=axis, keepdims=keepdims)


def argmin(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Index of the first minimum along ``dim``; int64, not differentiable."""
    axis, keepdims = _dims("argmin", dim, keepdim, axis, keepdims)
    _nonempty(x, "argmin", axis, IndexError)  # PyTorch: IndexError
    return apply(Argmin, x, axis=axis, keepdims=keepdims)


class Std(Op):
    """sqrt of a variance, whose gradient is 0 where the variance is 0 (a constant input), as in PyTorch."""
    name = "std"
    saves = ("out",)
    forward = staticmethod(lambda F, v: F.sqrt(v))

    @staticmethod
    def vjp(F, g, out, v):
        zero = out == 0
        return (F.where(zero, 0, g / (2 * F.where(zero, 1, out))),)


def _correction(what, correction, unbiased):
    if unbiased is not None:
        if correction is not None:
            raise TypeError(f"{what}() got both unbiased and correction; pass one")
        return 1 if unbiased else 0
    return 1 if correction is None else correction


def var(x, dim=None, unbiased=None, keepdim=None, *, correction=None, axis=None, keepdims=None):
    """Variance over ``dim`` with ``correction`` (Bessel's, 1, by default as in PyTorch; 0 for NumPy's).

    ``unbiased=False`` is ``correction=0``."""
    if unbiased is not None and not isinstance(unbiased, bool):
        raise TypeError(f"var(): unbiased must be a bool, got {unbiased!r}")
    axis, keepdims = _dims("var", dim, keepdim, axis, keepdims)
    correction = _correction("var", correction, unbiased)
    axes = normalize_axis(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    if n - correction <= 0:
        raise ValueError(f"var over {n} element(s) with correction={correction} is undefined")
    d = x - mean(x, axis=axes, keepdims=True)
    return sum(d * d, axis=axes, keepdims=keepdims) / (n - correction)


def std(x, dim=None, unbiased=None, keepdim=None, *, correction=None, axis=None, keepdims=None):
    """Standard deviation, sqrt(var); its gradient at a constant input is 0, as in PyTorch."""
    return apply(Std, var(x, dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims))


def logsumexp(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """log(sum(exp(x))) along ``dim``, shifted by the max so it never overflows."""
    axis, keepdims = _dims("logsumexp", dim, keepdim, axis, keepdims)
    axes = normalize_axis(axis, x.ndim)
    # The shift is a constant (its gradient cancels), so it is taken on the arrays, unrecorded.
    # Where the max is infinite the shift is 0, so all -inf gives -inf and +inf gives +inf (not NaN).
    xp = x.backend.xp
    # over nothing it is log(0) = -inf, as in PyTorch (the max has no identity: shift by 0)
    m = xp.max(x.array, axis=axes, keepdims=True) if x.numel() else xp.zeros(
        [1 if i in axes else n for i, n in enumerate(x.shape)], dtype=x.dtype)
    m = Tensor._make(xp.asarray(xp.where(xp.isfinite(m), m, 0), dtype=x.dtype), x.backend)
    out = log(sum(exp(x - m), axis=axes, keepdims=True)) + m
    if not keepdims:
        out = squeeze(out, axis=axes)
    return out


class All(_NotDifferentiable):
    name = "all"
    forward = staticmethod(lambda F, x, axis, keepdims: F.all(x, axis=axis, keepdims=keepdims))


class Any(_NotDifferentiable):
    name = "any"
    forward = staticmethod(lambda F, x, axis, keepdims: F.any(x, axis=axis, keepdims=keepdims))


def all(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001 - PyTorch's name
    """Whether every element (along ``dim``) is nonzero: a bool tensor, not differentiable."""
    return _reduce(All, x, *_dims("all", dim, keepdim, axis, keepdims))


def any(x, dim=None, keepdim=None, *, axis=None, keepdims=None):  # noqa: A001
    """Whether any element (along ``dim``) is nonzero: a bool tensor, not differentiable."""
    return _reduce(Any, x, *_dims("any", dim, keepdim, axis, keepdims))


class Cumsum(Op):
    name = "cumsum"
    saves = ()
    forward = staticmethod(lambda F, x, axis: F.cumsum(x, axis=axis))

    @staticmethod
    def vjp(F, g, out, x, axis):
        rev = (slice(None),) * axis + (slice(None, None, -1),)
        return (F.cumsum(g[rev], axis=axis)[rev],)  # the reversed running sum


def cumsum(x, dim=None, *, axis=None, dtype=None):
    """``torch.cumsum``: running sums along ``dim`` (required, as in PyTorch)."""
    dim = alias("cumsum", dim, "dim", axis, "axis")
    if dim is None:
        raise TypeError("cumsum() missing the dimension: cumsum(x, dim)")
    if dtype is not None:
        x = x.astype(dtype)
    elif x.dtype.kind in "bi" and x.dtype.itemsize < 8 or x.dtype.kind == "u":
        x = x.astype("int64")  # integers accumulate in int64, as in PyTorch
    return apply(Cumsum, x, axis=normalize_axis(dim, x.ndim or 1)[0] if x.ndim else 0)


class Norm2(Op):
    """The 2-norm; its gradient is 0 at a zero input, as in PyTorch (the composed form gives NaN)."""
    name = "norm"
    saves = ("x", "out")
    forward = staticmethod(lambda F, x, axis, keepdims: F.sqrt(F.sum(x * x, axis=axis, keepdims=keepdims)))

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims):
        safe = F.where(out == 0, 1, out)
        return (_expand_to(F, g / safe, x.shape, axis, keepdims) * x,)


def norm(x, p="fro", dim=None, keepdim=False, dtype=None):
    """``torch.norm`` of a vector (or, with ``dim``, along dimensions): ``p`` of 2 / ``"fro"``
    (the default), 1, ``inf``, ``-inf``, 0 (the count of nonzeros) or any other positive number."""
    if dtype is not None:
        x = x.astype(dtype)
    axis = normalize_axis(dim, x.ndim) if x.ndim else ()
    if p in ("fro", 2, 2.0):
        return apply(Norm2, x, axis=axis, keepdims=bool(keepdim))
    if p == float("inf"):
        return amax(abs_(x), dim=axis, keepdim=keepdim)
    if p == float("-inf"):
        return amin(abs_(x), dim=axis, keepdim=keepdim)
    if p == 0:
        return sum((x != 0).astype(x.dtype), dim=axis, keepdim=keepdim)
    if isinstance(p, numbers.Real) and p > 0:
        s = sum(abs_(x) ** p, dim=axis, keepdim=keepdim)
        return s if p == 1 else s ** (1.0 / p)
    raise ValueError(f"norm: unsupported p={p!r} (2, 'fro', 1, inf, -inf, 0 or a positive number)")


def _int_accumulates(x, dtype):
    """``x`` cast to ``dtype``, or bools and integers to int64 as PyTorch's sums and products do."""
    if dtype is not None:
        return x.astype(dtype)
    if x.dtype.kind in "bi" and x.dtype.itemsize < 8 or x.dtype.kind in "bu":
        return x.astype("int64")
    return x


class Prod(Op):
    """The product along one axis. The gradient is ``out / x`` where the slice has no zero, the
    product of the others at a slice's only zero, and 0 elsewhere (two zeros or more: all 0),
    chosen elementwise so there is no sync to count the zeros."""
    name = "prod"
    saves = ("x", "out")
    forward = staticmethod(lambda F, x, axis, keepdims: F.prod(x, axis=axis, keepdims=keepdims))

    @staticmethod
    def vjp(F, g, out, x, axis, keepdims):
        if not keepdims:
            g, out = F.expand_dims(g, axis), F.expand_dims(out, axis)
        zero = x == 0
        n_zero = F.sum(zero, axis=axis, keepdims=True)
        safe = F.where(zero, 1, x)
        others = F.prod(safe, axis=axis, keepdims=True)  # the product of the nonzeros
        lone = F.logical_and(zero, n_zero == 1)
        return (g * F.where(n_zero == 0, out / safe, F.where(lone, others, 0)),)


def prod(input, dim=None, keepdim=None, *, dtype=None, axis=None, keepdims=None):  # noqa: A002 - torch's names
    """``torch.prod``: the product of all elements, or along the one dimension ``dim``; bools and
    integers multiply in int64. Its gradient is right where the input holds zeros (one or more)."""
    dim, keepdims = _dims("prod", dim, keepdim, axis, keepdims)
    x = _int_accumulates(input, dtype)
    if dim is None:
        if keepdims:
            raise TypeError("prod() with keepdim=True needs a dim")
        return apply(Prod, reshape(x, (-1,)), axis=0, keepdims=False)
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"prod(): dim must be one int, got {dim!r}")
    if x.ndim == 0:
        normalize_axis(dim, 0)
        return x.clone()
    return apply(Prod, x, axis=normalize_axis(dim, x.ndim)[0], keepdims=keepdims)


def _reverse_cumsum(F, v, axis):
    rev = (slice(None),) * axis + (slice(None, None, -1),)
    return F.cumsum(v[rev], axis=axis)[rev]


class Cumprod(Op):
    """Running products. Before the first zero of a slice the gradient is the reversed running
    sum of ``g * out`` over ``x``; at the first zero it is that sum over the running products with
    that zero taken as 1; after it, 0. Chosen elementwise, without a sync."""
    name = "cumprod"
    saves = ("x", "out")
    forward = staticmethod(lambda F, x, axis: F.cumprod(x, axis=axis))

    @staticmethod
    def vjp(F, g, out, x, axis):
        zero = x == 0
        seen = F.cumsum(zero, axis=axis)  # zeros up to and including each position
        before = seen == 0
        first = F.logical_and(zero, seen == 1)
        at_first = _reverse_cumsum(F, g * F.cumprod(F.where(first, 1, x), axis=axis), axis)
        before_first = _reverse_cumsum(F, g * out, axis) / F.where(zero, 1, x)
        return (F.where(before, before_first, F.where(first, at_first, 0)),)


def cumprod(input, dim=None, *, dtype=None, axis=None):  # noqa: A002
    """``torch.cumprod``: running products along ``dim`` (required); bools and integers in int64.
    Its gradient is right where the input holds zeros."""
    dim = alias("cumprod", dim, "dim", axis, "axis")
    if dim is None:
        raise TypeError("cumprod() missing the dimension: cumprod(x, dim)")
    x = _int_accumulates(input, dtype)
    return apply(Cumprod, x, axis=normalize_axis(dim, x.ndim or 1)[0] if x.ndim else 0)


def _median_index(x, d):
    """Per slice along ``d`` (kept as size 1), the index of the lower median, or of the first NaN
    where the slice holds one (PyTorch's rule: NaN propagates)."""
    xp = x.backend.xp
    a = x.array
    n = a.shape[d]
    order = xp.argsort(a, axis=d, kind="stable")  # NaNs last, in their original order
    if a.dtype.kind == "f":
        n_nan = xp.isnan(a).sum(axis=d, keepdims=True)
        k = xp.where(n_nan > 0, n - n_nan, (n - 1) // 2)
    else:
        k = xp.full([1 if i == d else m for i, m in enumerate(a.shape)], (n - 1) // 2, dtype=xp.int64)
    return xp.take_along_axis(order, k.astype(xp.int64, copy=False), axis=d).astype(xp.int64, copy=False)


def median(input, dim=None, keepdim=False):  # noqa: A002
    """``torch.median``: ``median(x)`` is the lower median of all elements (of an even count, the
    smaller of the two middle ones; NaN if there is a NaN); ``median(x, dim, keepdim=False)`` is
    the named tuple ``(values, indices)`` along ``dim``. The gradient goes to the selected element."""
    xp = input.backend.xp
    if dim is None:
        if input.numel() == 0:
            return Tensor._make(xp.asarray(float("nan"), dtype=input.dtype), input.backend)
        flat = reshape(input, (-1,))
        return getitem(flat, Tensor._make(_median_index(flat, 0).reshape(()), input.backend))
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"median(): dim must be one int, got {dim!r}")
    (d,) = normalize_axis(dim, input.ndim)
    if input.ndim == 0:
        return return_types.median(input.clone(), Tensor._make(xp.zeros((), dtype=xp.int64), input.backend))
    if input.shape[d] == 0:
        raise IndexError(f"median(): expected reduction dim {dim} to have non-zero size (shape {input.shape})")
    idx = Tensor._make(_median_index(input, d), input.backend)
    values = gather(input, d, idx)
    if not keepdim:
        values, idx = squeeze(values, d), squeeze(idx, d)
    return return_types.median(values, idx)


def diff(input, n=1, dim=-1, prepend=None, append=None):  # noqa: A002
    """``torch.diff``: the ``n``-th forward difference ``out[i] = x[i + 1] - x[i]`` along ``dim``,
    after joining ``prepend`` and ``append`` to ``input`` there; differentiable in all three."""
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    if not isinstance(n, numbers.Integral) or n < 0:
        raise RuntimeError(f"diff expects n to be a non-negative int, got {n!r}")
    (d,) = normalize_axis(dim, input.ndim)
    parts = [p for p in (prepend, input, append) if p is not None]
    x = concatenate(parts, axis=d) if len(parts) > 1 else input
    lead = (slice(None),) * d
    for _ in range(int(n)):
        x = getitem(x, lead + (slice(1, None),)) - getitem(x, lead + (slice(None, -1),))
    return x
