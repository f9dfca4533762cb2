"""Layer 3: every differentiable op, as functions with NumPy's and PyTorch's names.

This module is also the namespace VJPs run on under ``create_graph`` (it
registers itself with the tape), and it installs the Tensor's operators and
methods from :data:`METHODS`. Names in ``__all__`` are the public functions
(``bg.exp``); the others here (``im2col``, ``relu_backward``, ...) are the
recorded kernels VJPs call under ``create_graph``.
"""
from __future__ import annotations

import sys

from ..tape import engine
from ..tape.op import DeviceMismatchError, Op, alias, apply  # noqa: F401 - for ops defined outside this package
from ..tape.tensor import Tensor
from . import elementwise as _elementwise
from . import inplace as _inplace
from . import sampling as _sampling
from . import return_types
from .arrangement import argsort, flip, isclose, nonzero, outer, repeat, roll, tril, triu, unflatten
from .conv import avg_pool2d, col2im, conv2d, im2col, max_pool2d, max_pool2d_backward, max_pool2d_gather
from .creation import (arange, as_tensor, empty, empty_like, eye, from_dlpack, from_numpy, full, full_like, linspace,
                       logspace, ones, ones_like, rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros,
                       zeros_like)
from .indexing import gather, index_select, masked_fill, sort, take_along_dim, topk
from .indexing import (index_add, index_add_, index_fill, index_fill_, masked_scatter, scatter, scatter_,
                       scatter_add, scatter_add_)
from .einsum import einsum
from .elementwise import (abs, add, astype, clip, clone, divide, erf, exp, gelu, greater, greater_equal,
                          isfinite, leaky_relu, less, less_equal, log, logical_and, logical_or, maximum, minimum,
                          multiply, negative, not_equal, power, relu, sigmoid, sign, softplus, sqrt,
                          subtract, tanh, where)
from .elementwise import equal as eq
from .elementwise import cos, fmod, lerp, promote_types, remainder, result_type, sin, trunc
from .elementwise import ceil, expm1, floor, log1p, reciprocal, round, rsqrt  # noqa: A004 - torch's names
from .joining import cat, chunk, concatenate, pad, split, stack, unbind
from .linalg import matmul
from .normalization import batch_norm_backward
from .recorded import gru_cell_backward, lstm_cell_backward, relu_backward, relu_backward_colsum
from .reductions import all, amax, amin, any, argmax, argmin, cumsum, logsumexp, max, mean, min, norm, std, sum, var
from .reductions import cumprod, diff, median, prod
from .shape import (broadcast_to, expand, expand_dims, flatten, getitem, index_backward, narrow, permute, reshape,
                    squeeze, swapaxes, t, transpose, unsqueeze)
from .sampling import bernoulli, multinomial, normal
from .softmax import log_softmax, softmax
from .transfer import to

#: VJPs test this to tell ``create_graph`` (ops that record) from plain backward
records = True


def one_hot(labels, num_classes=-1, dtype="int64"):
    """One-hot rows for integer ``labels``, int64 as ``torch.nn.functional.one_hot`` (a constant: not
    differentiable); ``num_classes=-1`` takes one more than the largest label."""
    if num_classes == -1:
        num_classes = int(labels.numpy().max()) + 1 if labels.numel() else 0
    arr = labels.backend.F.one_hot(labels.array, num_classes, dtype)
    return Tensor._make(arr, labels.backend)


def _matrix_product(what, ndim):
    def f(a, b):
        if a.ndim != ndim or b.ndim != ndim:
            raise RuntimeError(f"{what}: expected two {ndim}-D tensors, got shapes {a.shape} and {b.shape}")
        if ndim == 3 and a.shape[0] != b.shape[0]:
            raise RuntimeError(f"{what}: batch sizes differ: shapes {a.shape} and {b.shape}")
        return matmul(a, b)
    f.__name__ = f.__qualname__ = what
    kind = "matrices" if ndim == 2 else "batches of matrices"
    f.__doc__ = f"``torch.{what}``: the product of two {kind}, no broadcasting."
    return f


mm, bmm = _matrix_product("mm", 2), _matrix_product("bmm", 3)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):  # noqa: A002 - torch's names
    """``torch.addmm``: ``beta * input + alpha * (mat1 @ mat2)``, ``input`` broadcast to the product."""
    prod = mm(mat1, mat2)
    if alpha != 1:
        prod = prod * alpha
    return prod if beta == 0 else prod + (input if beta == 1 else input * beta)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    """``torch.allclose``: whether ``|a - b| <= atol + rtol * |b|`` everywhere (a Python bool)."""
    return bool(a.backend.xp.allclose(a.array, b.array if isinstance(b, Tensor) else b, rtol=rtol, atol=atol,
                                      equal_nan=equal_nan))


def equal(a, b) -> bool:
    """``torch.equal``: whether ``a`` and ``b`` have the same shape and the same elements (a Python
    bool; :func:`eq` is the elementwise comparison)."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    return bool(a.backend.xp.array_equal(a.array, b.array if isinstance(b, Tensor) else b))


def numel(x) -> int:
    """The number of elements of ``x``."""
    return x.numel()


def clamp(x, min=None, max=None, *, a_min=None, a_max=None):  # noqa: A002 - PyTorch's names
    """``torch.clamp``: :func:`clip` with PyTorch's keyword names (NumPy's ``a_min``/``a_max`` too).
    Tensor bounds broadcast and get the gradient where they bind (``min`` wins ties with ``x``
    to ``x``; where ``min > max`` the result is ``max``, as in PyTorch)."""
    lo, hi = alias("clamp", min, "min", a_min, "a_min"), alias("clamp", max, "max", a_max, "a_max")
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        out = x if lo is None else where(x < lo, lo, x)
        return out if hi is None else where(out > hi, hi, out)
    return clip(x, lo, hi)


def _rev(fn):
    return lambda self, other: fn(other, self)


# Named (not lambdas) so that the Tensor's methods carry docstrings into the API reference.
def _square(self):
    """``self * self``, as ``torch.Tensor.square``."""
    return multiply(self, self)


def _view_as(self, other):
    """``self.view(other.shape)``, as ``torch.Tensor.view_as``."""
    return reshape(self, other.shape)


def _reshape_as(self, other):
    """``self.reshape(other.shape)``, as ``torch.Tensor.reshape_as``."""
    return reshape(self, other.shape)


def _expand_as(self, other):
    """``self.expand(other.shape)``, as ``torch.Tensor.expand_as``."""
    return expand(self, other.shape)


def _transposed(self):
    """The tensor with its dimensions reversed (``permute`` of all of them, as ``torch.Tensor.T``)."""
    return transpose(self)


#: Tensor attribute: function. Every entry is an op function of this package.
METHODS = {
    "__add__": add, "__radd__": _rev(add), "__sub__": subtract, "__rsub__": _rev(subtract),
    "__mul__": multiply, "__rmul__": _rev(multiply), "__truediv__": divide, "__rtruediv__": _rev(divide),
    "__mod__": remainder, "__rmod__": _rev(remainder),
    "__pow__": power, "__rpow__": _rev(power), "__matmul__": matmul, "__rmatmul__": _rev(matmul),
    "__neg__": negative, "__pos__": lambda self: self, "__abs__": abs,
    "__gt__": greater, "__ge__": greater_equal, "__lt__": less, "__le__": less_equal,
    "__eq__": eq, "__ne__": not_equal, "__getitem__": getitem, "__hash__": lambda self: id(self),
    "T": property(_transposed),
    "view": reshape, "unsqueeze": expand_dims, "expand_dims": expand_dims, "clamp": clamp, "pow": power,
    "add": add, "sub": subtract, "mul": multiply, "div": divide, "to": to, "clone": clone,
    "eq": eq, "equal": equal, "ne": not_equal, "lt": less, "le": less_equal, "gt": greater, "ge": greater_equal,
    "neg": negative, "square": _square, "mm": mm, "bmm": bmm, "addmm": addmm,
    "view_as": _view_as, "reshape_as": _reshape_as, "expand_as": _expand_as,
}
for _f in (exp, log, sqrt, sin, cos, fmod, remainder, lerp, trunc, abs, sign, clip, relu, leaky_relu, sigmoid, tanh,
           softplus, gelu, sum, mean, max, min,
           amax, amin, var, std, logsumexp, argmax, argmin, reshape, flatten, transpose, permute, swapaxes, expand,
           squeeze, softmax, log_softmax, matmul, astype, isfinite, erf, maximum, minimum, all, any, cumsum, norm, t,
           narrow, split, chunk, unbind, gather, index_select, masked_fill, sort, topk, ceil, expm1, floor, log1p,
           reciprocal, round, rsqrt, flip, roll, repeat, unflatten, tril, triu, argsort, isclose, nonzero,
           scatter, scatter_, scatter_add, scatter_add_, index_add, index_add_, index_fill, index_fill_,
           masked_scatter, prod, cumprod, median, diff):
    METHODS.setdefault(_f.__name__, _f)
METHODS.update(_inplace.METHODS)
METHODS.update(_sampling.METHODS)
for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)

engine.register_graph_namespace(sys.modules[__name__])

__all__ = sorted(set(_elementwise.__all__) | {
    "all", "allclose", "amax", "amin", "any", "arange", "argmax", "argmin", "argsort", "as_tensor", "avg_pool2d",
    "bmm", "broadcast_to", "cat", "chunk", "clamp", "concatenate", "conv2d", "cumsum", "empty", "empty_like", "eq",
    "expand", "expand_dims", "eye", "flatten", "flip", "from_numpy", "full", "full_like", "gather", "index_select",
    "isclose", "linspace", "log_softmax", "logsumexp", "masked_fill", "matmul", "max", "max_pool2d", "mean", "min",
    "mm", "narrow", "nonzero", "norm", "numel", "one_hot", "ones", "ones_like", "outer", "pad", "permute", "rand",
    "rand_like", "randint", "randn", "randn_like", "randperm", "repeat", "reshape", "return_types", "roll",
    "softmax", "sort", "split", "squeeze", "stack", "std", "sum", "swapaxes", "t", "take_along_dim", "tensor", "to",
    "topk", "transpose", "tril", "triu", "unbind", "unflatten", "unsqueeze", "var", "zeros", "zeros_like",
    "scatter", "scatter_add", "index_add", "index_fill", "masked_scatter", "prod", "cumprod", "median", "diff",
    "einsum", "from_dlpack", "logspace", "bernoulli", "normal", "multinomial", "addmm"})
