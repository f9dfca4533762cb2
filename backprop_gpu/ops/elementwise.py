"""Elementwise arithmetic and math, each op's forward beside its VJP."""
from __future__ import annotations

import numbers

from ..tensor import Tensor
from .core import Op, apply, binary, constant_like


class Add(Op):
    name = "add"
    saves_inputs = False
    forward = staticmethod(lambda xp, a, b: a + b)
    vjp = staticmethod(lambda F, g, out, a, b: (g, g))


class Sub(Op):
    name = "sub"
    saves_inputs = False
    forward = staticmethod(lambda xp, a, b: a - b)
    vjp = staticmethod(lambda F, g, out, a, b: (g, -g))


class Mul(Op):
    name = "mul"
    forward = staticmethod(lambda xp, a, b: a * b)
    vjp = staticmethod(lambda F, g, out, a, b: (g * b, g * a))


class Div(Op):
    name = "div"
    forward = staticmethod(lambda xp, a, b: a / b)
    vjp = staticmethod(lambda F, g, out, a, b: (g / b, -g * a / (b * b)))


class PowScalar(Op):
    """``x ** p`` for a constant Python exponent."""
    name = "pow"
    forward = staticmethod(lambda xp, x, p: x ** p)

    @staticmethod
    def vjp(F, g, out, x, p):
        if p == 0:
            return (g * 0,)
        return (g * p * x ** (p - 1),)


class Pow(Op):
    """``a ** b`` with a tensor exponent; d/db uses log(a) and is 0 where a <= 0."""
    name = "pow"
    saves_output = True
    forward = staticmethod(lambda xp, a, b: a ** b)

    @staticmethod
    def vjp(F, g, out, a, b):
        pos = a > 0
        log_a = F.log(F.where(pos, a, 1))
        return g * b * a ** (b - 1), F.where(pos, g * out * log_a, 0)


class Neg(Op):
    name = "neg"
    saves_inputs = False
    forward = staticmethod(lambda xp, x: -x)
    vjp = staticmethod(lambda F, g, out, x: (-g,))


class Exp(Op):
    name = "exp"
    saves_inputs = False
    saves_output = True
    forward = staticmethod(lambda xp, x: xp.exp(x))
    vjp = staticmethod(lambda F, g, out, x: (g * out,))


class Log(Op):
    name = "log"
    forward = staticmethod(lambda xp, x: xp.log(x))
    vjp = staticmethod(lambda F, g, out, x: (g / x,))


class Sqrt(Op):
    name = "sqrt"
    saves_inputs = False
    saves_output = True
    forward = staticmethod(lambda xp, x: xp.sqrt(x))
    vjp = staticmethod(lambda F, g, out, x: (g * 0.5 / out,))


class Abs(Op):
    name = "abs"
    forward = staticmethod(lambda xp, x: xp.abs(x))
    vjp = staticmethod(lambda F, g, out, x: (g * F.sign(x),))


class Clip(Op):
    """Gradient flows where lo <= x <= hi, as in ``torch.clamp``."""
    name = "clip"
    forward = staticmethod(lambda xp, x, lo, hi: xp.clip(x, lo, hi))

    @staticmethod
    def vjp(F, g, out, x, lo, hi):
        inside = 1
        if lo is not None:
            inside = (x >= lo) * inside
        if hi is not None:
            inside = (x <= hi) * inside
        return (F.where(inside, g, 0),)


class Maximum(Op):
    """Ties send half the gradient each way, as in ``torch.maximum``."""
    name = "maximum"
    forward = staticmethod(lambda xp, a, b: xp.maximum(a, b))

    @staticmethod
    def vjp(F, g, out, a, b):
        # where() on g keeps g's dtype; bool * 0.5 would promote to float64
        ga = F.where(a > b, g, F.where(a == b, 0.5 * g, 0))
        return ga, g - ga


class Minimum(Op):
    name = "minimum"
    forward = staticmethod(lambda xp, a, b: xp.minimum(a, b))

    @staticmethod
    def vjp(F, g, out, a, b):
        ga = F.where(a < b, g, F.where(a == b, 0.5 * g, 0))
        return ga, g - ga


class Where(Op):
    name = "where"
    saves_inputs = True
    forward = staticmethod(lambda xp, c, a, b: xp.where(c, a, b))

    @staticmethod
    def vjp(F, g, out, c, a, b):
        return None, F.where(c, g, 0), F.where(c, 0, g)


class _AstypeNonFloat(Op):
    """A cast to an integer or boolean dtype: a constant, not recorded (as in PyTorch)."""
    name = "astype"
    differentiable = False
    forward = staticmethod(lambda xp, x, dtype: x.astype(dtype))


class Copy(Op):
    name = "clone"
    saves_inputs = False
    forward = staticmethod(lambda xp, x: x.copy())
    vjp = staticmethod(lambda F, g, out, x: (g,))


class Astype(Op):
    name = "astype"
    saves_inputs = False
    forward = staticmethod(lambda xp, x, dtype: x.astype(dtype))
    # the gradient goes back in the input's dtype (float64 -> float32 for a .double() of float32)
    vjp = staticmethod(lambda F, g, out, x, dtype: (g.astype(x.dtype),))


def _nondiff(opname, fn):
    """An op with a boolean/integer output: no VJP, never recorded."""
    cls = type(opname.capitalize(), (Op,), {"name": opname, "differentiable": False,
                                             "forward": staticmethod(fn)})

    def f(a, b):
        return binary(cls, a, b)
    f.__name__ = opname
    f.__doc__ = f"Elementwise ``{opname}`` (boolean result, not differentiable)."
    return f


greater = _nondiff("greater", lambda xp, a, b: a > b)
greater_equal = _nondiff("greater_equal", lambda xp, a, b: a >= b)
less = _nondiff("less", lambda xp, a, b: a < b)
less_equal = _nondiff("less_equal", lambda xp, a, b: a <= b)
equal = _nondiff("equal", lambda xp, a, b: a == b)
not_equal = _nondiff("not_equal", lambda xp, a, b: a != b)
logical_and = _nondiff("logical_and", lambda xp, a, b: xp.logical_and(a, b))
logical_or = _nondiff("logical_or", lambda xp, a, b: xp.logical_or(a, b))


class _Sign(Op):
    name = "sign"
    differentiable = False
    forward = staticmethod(lambda xp, x: xp.sign(x))


class _IsFinite(Op):
    name = "isfinite"
    differentiable = False
    forward = staticmethod(lambda xp, x: xp.isfinite(x))


def _binary_function(op, name, doc):
    """The public function of a two-input op. Two tensors go straight to ``apply`` (one call
    less per op: most of a small graph's cost is such Python overhead); anything else, and
    any error, goes through :func:`binary`, which converts constants and names both shapes."""

    def f(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            try:
                return apply(op, a, b)
            except ValueError:
                pass
        return binary(op, a, b)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


add = _binary_function(Add, "add", "``a + b`` with broadcasting.")
subtract = _binary_function(Sub, "subtract", "``a - b`` with broadcasting.")
multiply = _binary_function(Mul, "multiply", "``a * b`` with broadcasting.")
divide = _binary_function(Div, "divide", "``a / b`` with broadcasting.")


def power(a, b):
    """``a ** b``; a constant Python exponent takes a cheaper path."""
    if isinstance(a, Tensor) and isinstance(b, numbers.Real) and not isinstance(b, bool):
        # a Python number, so a NumPy float64 exponent does not promote a float32 tensor
        return apply(PowScalar, a, p=int(b) if isinstance(b, numbers.Integral) else float(b))
    return binary(Pow, a, b)


def negative(x):
    return apply(Neg, x)


def exp(x):
    """Elementwise e**x."""
    return apply(Exp, x)


def log(x):
    """Elementwise natural logarithm."""
    return apply(Log, x)


def sqrt(x):
    """Elementwise square root."""
    return apply(Sqrt, x)


def abs(x):  # noqa: A001 - NumPy's name
    """Elementwise absolute value; its gradient at 0 is 0."""
    return apply(Abs, x)


def sign(x):
    """Elementwise sign; zero gradient, as in PyTorch."""
    return apply(_Sign, x)


def isfinite(x):
    return apply(_IsFinite, x)


def clip(x, a_min=None, a_max=None):
    """Limit values to [a_min, a_max] (either may be None)."""
    if a_min is None and a_max is None:
        raise ValueError("clip needs a_min or a_max")
    return apply(Clip, x, lo=a_min, hi=a_max)


def maximum(a, b):
    """Elementwise maximum; ties split the gradient."""
    return binary(Maximum, a, b)


def minimum(a, b):
    """Elementwise minimum; ties split the gradient."""
    return binary(Minimum, a, b)


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b``; differentiable in ``a`` and ``b``."""
    ref = next((t for t in (a, b, condition) if isinstance(t, Tensor)), None)
    if ref is None:
        raise TypeError("where needs at least one tensor argument")
    fref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else ref
    return apply(Where, constant_like(condition, ref), constant_like(a, fref), constant_like(b, fref))


def clone(x):
    """A copy of ``x`` that stays on the graph."""
    return apply(Copy, x)


def astype(x, dtype):
    """``x`` cast to ``dtype``; gradients flow back through float casts."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    return apply(Astype if dtype.kind in "fc" else _AstypeNonFloat, x, dtype=dtype)


def zeros_like(x, dtype=None, requires_grad=False):
    """Zeros of ``x``'s shape, on its device, in its dtype unless ``dtype`` is given (a constant)."""
    t = Tensor._make(x.backend.xp.zeros_like(x.array, dtype=dtype), x.backend)
    return t.requires_grad_() if requires_grad else t


def ones_like(x, dtype=None, requires_grad=False):
    """Ones of ``x``'s shape, on its device, in its dtype unless ``dtype`` is given (a constant)."""
    t = Tensor._make(x.backend.xp.ones_like(x.array, dtype=dtype), x.backend)
    return t.requires_grad_() if requires_grad else t
