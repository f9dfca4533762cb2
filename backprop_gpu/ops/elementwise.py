"""Elementwise ops, one table row each: forward over ``F``, VJP beside it, what it saves.

Each row becomes an :class:`~backprop_gpu.tape.op.Op` subclass, a function of
the same name (``bg.exp``) and, through :mod:`backprop_gpu.ops`'s method table,
a Tensor method. VJPs run on the array namespace in plain backward and on the
ops namespace under ``create_graph`` (see :mod:`backprop_gpu.tape.op`).
Adding an elementwise op is one row here plus its row in the gradcheck tests.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..array.dtypes import is_differentiable
from ..array.kernels.reference import gelu_grad
from ..tape.op import Op, apply, binary, constant_like
from ..tape.tensor import Tensor, get_default_dtype

_TWO_OVER_SQRTPI = 2 / math.sqrt(math.pi)


def _gelu_row(approximate, doc):
    """The table row of a GELU: the namespace's fused kernels, or under ``create_graph`` the
    reference statement of the gradient over the recording ops."""
    def vjp(F, g, out, x):
        return (gelu_grad(F, g, x, approximate) if F.records else F.gelu_backward(g, x, approximate),)
    return (lambda F, x: F.gelu_forward(x, approximate), vjp, ("x",), doc)


#: name: (forward(F, x), vjp(F, g, out, x, needs), saves, docstring)
UNARY = {
    "negative": (lambda F, x: -x, lambda F, g, out, x: (-g,), (), "Elementwise ``-x``."),
    "exp": (lambda F, x: F.exp(x), lambda F, g, out, x: (g * out,), ("out",), "Elementwise e**x."),
    "log": (lambda F, x: F.log(x), lambda F, g, out, x: (g / x,), ("x",), "Elementwise natural logarithm."),
    "sqrt": (lambda F, x: F.sqrt(x), lambda F, g, out, x: (g * 0.5 / out,), ("out",),
             "Elementwise square root."),
    "abs": (lambda F, x: F.abs(x), lambda F, g, out, x: (g * F.sign(x),), ("x",),
            "Elementwise absolute value; its gradient at 0 is 0."),
    "relu": (lambda F, x: F.maximum(x, 0), lambda F, g, out, x: (F.relu_backward(g, out),), ("out",),
             "``max(x, 0)``."),
    # tanh form: no overflow for large |x|
    "sigmoid": (lambda F, x: 0.5 * (F.tanh(0.5 * x) + 1), lambda F, g, out, x: (g * out * (1 - out),),
                ("out",), "``1 / (1 + e^-x)``, computed without overflow."),
    "tanh": (lambda F, x: F.tanh(x), lambda F, g, out, x: (g * (1 - out * out),), ("out",),
             "Hyperbolic tangent."),
    "softplus": (lambda F, x: F.logaddexp(0, x), lambda F, g, out, x: (g * F.sigmoid(x),), ("x",),
                 "``log(1 + e^x)``, stable for large |x|."),
    "sin": (lambda F, x: F.sin(x), lambda F, g, out, x: (g * F.cos(x),), ("x",), "Elementwise sine."),
    "cos": (lambda F, x: F.cos(x), lambda F, g, out, x: (-g * F.sin(x),), ("x",), "Elementwise cosine."),
    "erf": (lambda F, x: F.erf(x), lambda F, g, out, x: (g * _TWO_OVER_SQRTPI * F.exp(-x * x),), ("x",),
            "Elementwise error function."),
    "gelu_erf": _gelu_row("none", "Exact GELU, ``x * Phi(x)``."),
    "gelu_tanh": _gelu_row("tanh", "GELU's tanh approximation."),
    "clone": (lambda F, x: x.copy(), lambda F, g, out, x: (g,), (), "A copy of ``x`` that stays on the graph."),
    "log1p": (lambda F, x: F.log1p(x), lambda F, g, out, x: (g / (1 + x),), ("x",), "``log(1 + x)``, exact near 0."),
    "expm1": (lambda F, x: F.expm1(x), lambda F, g, out, x: (g * (out + 1),), ("out",), "``e**x - 1``, exact near 0."),
    "rsqrt": (lambda F, x: 1 / F.sqrt(x), lambda F, g, out, x: (g * -0.5 * out * out * out,), ("out",),
              "``1 / sqrt(x)``."),
    "reciprocal": (lambda F, x: 1 / x, lambda F, g, out, x: (-g * out * out,), ("out",), "``1 / x``."),
    # piecewise constant: gradient 0 everywhere, as in PyTorch
    "floor": (lambda F, x: F.floor(x), lambda F, g, out, x: (g * 0,), (), "Round down (gradient 0)."),
    "ceil": (lambda F, x: F.ceil(x), lambda F, g, out, x: (g * 0,), (), "Round up (gradient 0)."),
    "trunc": (lambda F, x: F.trunc(x), lambda F, g, out, x: (g * 0,), (), "Round toward zero (gradient 0)."),
    "round": (lambda F, x: F.round(x), lambda F, g, out, x: (g * 0,), (),
              "Round half to even, as ``torch.round`` (gradient 0)."),
}

#: name: (forward(F, a, b), vjp(F, g, out, a, b, needs), saves, docstring)
BINARY = {
    "add": (lambda F, a, b: a + b, lambda F, g, out, a, b: (g, g), (), "``a + b`` with broadcasting."),
    "subtract": (lambda F, a, b: a - b, lambda F, g, out, a, b: (g, -g), (), "``a - b`` with broadcasting."),
    "multiply": (lambda F, a, b: a * b, lambda F, g, out, a, b, needs: (g * b if needs[0] else None,
                                                                        g * a if needs[1] else None),
                 ("a", "b"), "``a * b`` with broadcasting."),
    "divide": (lambda F, a, b: _true_divide(a, b),
               lambda F, g, out, a, b, needs: (g / b if needs[0] else None, -g * a / (b * b) if needs[1] else None),
               ("a", "b"), "``a / b`` with broadcasting; integers divide to float32, as in PyTorch."),
    # C's fmod (the sign of a) and Python's % (the sign of b), as torch.fmod and torch.remainder
    "fmod": (lambda F, a, b: F.fmod(a, b), lambda F, g, out, a, b, needs: (
        g if needs[0] else None, -g * F.trunc(a / b) if needs[1] else None), ("a", "b"),
        "Elementwise remainder of ``a / b`` with the sign of ``a`` (C's fmod)."),
    "remainder": (lambda F, a, b: F.remainder(a, b), lambda F, g, out, a, b, needs: (
        g if needs[0] else None, -g * F.floor(a / b) if needs[1] else None), ("a", "b"),
        "Elementwise remainder of ``a / b`` with the sign of ``b`` (Python's %)."),
    # where() on g keeps g's dtype; bool * 0.5 would promote to float64. Ties split the gradient.
    "maximum": (lambda F, a, b: F.maximum(a, b), lambda F, g, out, a, b: _tie_split(
        g, F.where(a > b, g, F.where(a == b, 0.5 * g, 0))), ("a", "b"), "Elementwise maximum; ties split the gradient."),
    "minimum": (lambda F, a, b: F.minimum(a, b), lambda F, g, out, a, b: _tie_split(
        g, F.where(a < b, g, F.where(a == b, 0.5 * g, 0))), ("a", "b"), "Elementwise minimum; ties split the gradient."),
}

#: name: (forward(F, a, b), docstring): boolean results, never recorded
COMPARISON = {
    "greater": (lambda F, a, b: a > b, "``a > b``"),
    "greater_equal": (lambda F, a, b: a >= b, "``a >= b``"),
    "less": (lambda F, a, b: a < b, "``a < b``"),
    "less_equal": (lambda F, a, b: a <= b, "``a <= b``"),
    "equal": (lambda F, a, b: a == b, "``a == b``"),
    "not_equal": (lambda F, a, b: a != b, "``a != b``"),
    "logical_and": (lambda F, a, b: F.logical_and(a, b), "logical and"),
    "logical_or": (lambda F, a, b: F.logical_or(a, b), "logical or"),
}


def _true_divide(a, b):
    # integer / integer is float32 in PyTorch (its default dtype); NumPy gives float64
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return a.astype(get_default_dtype()) / b.astype(get_default_dtype())
    return a / b


def _tie_split(g, ga):
    return ga, g - ga


#: the op names errors and ``grad_fn`` show, where they differ from the function's (PyTorch's)
_OP_NAMES = {"multiply": "mul", "subtract": "sub", "divide": "div", "negative": "neg", "gelu_erf": "gelu"}


def _op_class(name, forward, vjp=None, saves=(), differentiable=True):
    body = {"name": _OP_NAMES.get(name, name), "saves": saves, "forward": staticmethod(forward), "differentiable": differentiable}
    if vjp is not None:
        body["vjp"] = staticmethod(vjp)
    return type("".join(p.capitalize() for p in name.split("_")), (Op,), body)


#: unary ops whose integer and boolean inputs give the default float dtype, as in PyTorch
#: (``bg.sqrt(int tensor)`` is float32, not NumPy's float64)
FLOAT_RESULT = {"exp", "log", "sqrt", "sin", "cos", "sigmoid", "tanh", "softplus", "erf", "gelu_erf", "gelu_tanh",
                "log1p", "expm1",
                "rsqrt", "reciprocal"}


def _unary_function(op, name, doc):
    if name in FLOAT_RESULT:
        def f(x):
            if x.array.dtype.kind in "iub":  # never requires grad: the cast loses no graph
                x = astype(x, get_default_dtype())
            return apply(op, x)
    else:
        def f(x):
            return apply(op, x)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


def _binary_function(op, name, doc):
    """Two tensors go straight to ``apply`` (most of a small graph's cost is such Python
    overhead); anything else, and any error, goes through :func:`binary`, which converts
    constants and names both shapes."""

    def f(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if a.array.dtype is not b.array.dtype:
                a, b = promote(a, b)
            try:
                return apply(op, a, b)
            except ValueError:
                pass
        return binary(op, a, b)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


#: PyTorch's dtype categories: a higher one wins whatever the sizes (int64 * float16 is float16)
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "V": 2, "c": 3}  # "V": ml_dtypes' bfloat16


def _common_dtype(da, pa, db, pb):
    """PyTorch's promotion of two operands of dtypes ``da``, ``db`` and priorities ``pa``, ``pb``
    (2 a dimensioned tensor, 1 a 0-d tensor, 0 a Python number): a lower-priority operand changes
    the dtype only when its category is higher."""
    ca, cb = _CATEGORY.get(da.kind, 2), _CATEGORY.get(db.kind, 2)
    if pa != pb:
        return (db if cb > ca else da) if pa > pb else (da if ca > cb else db)
    if ca != cb:
        return da if ca > cb else db
    return np.result_type(da, db)


def promote(a: Tensor, b: Tensor) -> tuple:
    """``a`` and ``b`` cast to their common dtype by PyTorch's rules, where they differ from NumPy's:
    across categories (bool < integer < float < complex) the higher category's dtype wins
    (int64 * float32 is float32), and a 0-d tensor changes a dimensioned one's dtype only when its
    category is higher (float32 * 0-d float64 stays float32). Float casts are recorded, so gradients
    flow back in each input's own dtype."""
    da, db = a.array.dtype, b.array.dtype
    if da == db:
        return a, b
    target = _common_dtype(da, 1 + bool(a.array.ndim), db, 1 + bool(b.array.ndim))
    return (a if da == target else astype(a, target)), (b if db == target else astype(b, target))


def _dtype_and_priority(x):
    if isinstance(x, Tensor):
        return x.array.dtype, 1 + bool(x.array.ndim)
    if isinstance(x, bool):
        return np.dtype(bool), 0
    if isinstance(x, numbers.Integral):
        return np.dtype(np.int64), 0
    if isinstance(x, numbers.Real):
        return np.dtype(get_default_dtype()), 0
    raise TypeError(f"result_type expects tensors or Python numbers, got {type(x).__name__}")


def result_type(tensor1, tensor2) -> np.dtype:
    """The dtype an elementwise op of ``tensor1`` and ``tensor2`` gives (``torch.result_type``); either
    may be a Python number, which changes a tensor's dtype only from a higher category."""
    return _common_dtype(*_dtype_and_priority(tensor1), *_dtype_and_priority(tensor2))


def promote_types(type1, type2) -> np.dtype:
    """The smallest dtype both ``type1`` and ``type2`` convert to (``torch.promote_types``)."""
    return _common_dtype(np.dtype(type1), 2, np.dtype(type2), 2)


OPS: dict[str, type] = {}
FUNCTIONS: dict = {}
for _name, (_fwd, _vjp, _saves, _doc) in UNARY.items():
    OPS[_name] = _op_class(_name, _fwd, _vjp, _saves)
    FUNCTIONS[_name] = _unary_function(OPS[_name], _name, _doc)
for _name, (_fwd, _vjp, _saves, _doc) in BINARY.items():
    OPS[_name] = _op_class(_name, _fwd, _vjp, _saves)
    FUNCTIONS[_name] = _binary_function(OPS[_name], _name, _doc)
for _name, (_fwd, _doc) in COMPARISON.items():
    OPS[_name] = _op_class(_name, _fwd, differentiable=False)
    FUNCTIONS[_name] = _binary_function(OPS[_name], _name, f"Elementwise {_doc} (boolean, not differentiable).")
for _name, _fwd in {"sign": lambda F, x: F.sign(x), "isfinite": lambda F, x: F.isfinite(x)}.items():
    OPS[_name] = _op_class(_name, _fwd, differentiable=False)
    FUNCTIONS[_name] = _unary_function(OPS[_name], _name, f"Elementwise ``{_name}`` (zero gradient, as PyTorch).")

negative, exp, log, sqrt, abs, relu, sigmoid, tanh, softplus, erf, clone, sin, cos = (  # noqa: A001 - NumPy's names
    FUNCTIONS[n] for n in ("negative", "exp", "log", "sqrt", "abs", "relu", "sigmoid", "tanh", "softplus", "erf",
                           "clone", "sin", "cos"))
log1p, expm1, rsqrt, reciprocal, floor, ceil, round, trunc = (  # noqa: A001 - torch's names
    FUNCTIONS[n] for n in ("log1p", "expm1", "rsqrt", "reciprocal", "floor", "ceil", "round", "trunc"))
add, subtract, multiply, divide, maximum, minimum, fmod, remainder = (
    FUNCTIONS[n] for n in ("add", "subtract", "multiply", "divide", "maximum", "minimum", "fmod", "remainder"))


def lerp(input, end, weight):  # noqa: A002 - torch's names
    """``torch.lerp``: ``input + weight * (end - input)``, differentiable in all three."""
    return input + weight * (end - input)
greater, greater_equal, less, less_equal, equal, not_equal, logical_and, logical_or = (
    FUNCTIONS[n] for n in COMPARISON)
sign, isfinite = FUNCTIONS["sign"], FUNCTIONS["isfinite"]


# --- ops with parameters: small classes with the same convention ------------------------

class PowScalar(Op):
    """``x ** p`` for a constant Python exponent."""
    name = "pow"
    saves = ("x",)
    forward = staticmethod(lambda F, x, p: x ** p)

    @staticmethod
    def vjp(F, g, out, x, p):
        if p == 0:
            return (g * 0,)
        return (g * p * x ** (p - 1),)


class Pow(Op):
    """``a ** b`` with a tensor exponent; d/db uses log(a) and is 0 where a <= 0."""
    name = "pow"
    saves = ("a", "b", "out")
    forward = staticmethod(lambda F, a, b: a ** b)

    @staticmethod
    def vjp(F, g, out, a, b, needs):
        ga = g * b * a ** (b - 1) if needs[0] else None
        if not needs[1]:
            return ga, None
        pos = a > 0
        return ga, F.where(pos, g * out * F.log(F.where(pos, a, 1)), 0)


class LeakyRelu(Op):
    name = "leaky_relu"
    saves = ("x",)
    forward = staticmethod(lambda F, x, slope: F.where(x > 0, x, x * slope))
    vjp = staticmethod(lambda F, g, out, x, slope: (F.where(x > 0, g, g * slope),))


class Clip(Op):
    """Gradient flows where lo <= x <= hi, as in ``torch.clamp``."""
    name = "clip"
    saves = ("x",)
    forward = staticmethod(lambda F, x, lo, hi: F.clip(x, lo, hi))

    @staticmethod
    def vjp(F, g, out, x, lo, hi):
        inside = 1
        if lo is not None:
            inside = (x >= lo) * inside
        if hi is not None:
            inside = (x <= hi) * inside
        return (F.where(inside, g, 0),)


class Where(Op):
    name = "where"
    saves = ("c",)
    forward = staticmethod(lambda F, c, a, b: F.where(c, a, b))

    @staticmethod
    def vjp(F, g, out, c, a, b):
        return None, F.where(c, g, 0), F.where(c, 0, g)


class Astype(Op):
    name = "astype"
    saves = ()
    forward = staticmethod(lambda F, x, dtype: x.astype(dtype))
    # the gradient goes back in the input's dtype (float64 -> float32 for a .double() of float32)
    vjp = staticmethod(lambda F, g, out, x, dtype: (g.astype(x.dtype),))


class _AstypeNonFloat(Op):
    """A cast to an integer or boolean dtype: a constant, not recorded (as in PyTorch)."""
    name = "astype"
    differentiable = False
    forward = staticmethod(lambda F, x, dtype: x.astype(dtype))


def power(a, b):
    """``a ** b``; a constant Python exponent takes a cheaper path."""
    if isinstance(a, Tensor) and isinstance(b, numbers.Real) and not isinstance(b, bool):
        if a.dtype.kind in "iu" and not isinstance(b, numbers.Integral):
            a = astype(a, get_default_dtype())  # int ** 0.5 is float32 in PyTorch (its default dtype)
        # a Python number, so a NumPy float64 exponent does not promote a float32 tensor
        return apply(PowScalar, a, p=int(b) if isinstance(b, numbers.Integral) else float(b))
    return binary(Pow, a, b)


def leaky_relu(x, negative_slope: float = 0.01):
    """x where x > 0, else negative_slope * x."""
    return apply(LeakyRelu, x, slope=negative_slope)


def gelu(x, approximate: str = "none"):
    """GELU: exact (erf) by default, PyTorch's default, or the tanh approximation with ``approximate='tanh'``."""
    if approximate == "tanh":
        return apply(OPS["gelu_tanh"], x)
    if approximate != "none":
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(OPS["gelu_erf"], x)


def clip(x, a_min=None, a_max=None):
    """Limit values to [a_min, a_max] (either may be None)."""
    if a_min is None and a_max is None:
        raise ValueError("clip needs a_min or a_max")
    return apply(Clip, x, lo=a_min, hi=a_max)


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b``; differentiable in ``a`` and ``b``."""
    ref = next((t for t in (a, b, condition) if isinstance(t, Tensor)), None)
    if ref is None:
        raise TypeError("where needs at least one tensor argument")
    fref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else ref
    return apply(Where, constant_like(condition, ref), *promote(constant_like(a, fref), constant_like(b, fref)))


def astype(x, dtype):
    """``x`` cast to ``dtype``; gradients flow back through float casts."""
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    return apply(Astype if is_differentiable(dtype) else _AstypeNonFloat, x, dtype=dtype)


__all__ = sorted(set(FUNCTIONS) - {"gelu_erf", "gelu_tanh"}) + [
    "power", "leaky_relu", "gelu", "clip", "where", "astype", "result_type", "promote_types", "lerp"]
