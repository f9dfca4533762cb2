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
from ..tape.op import DeviceMismatchError, Op, apply  # noqa: F401 - for ops defined outside this package
from ..tape.tensor import Tensor
from . import elementwise as _elementwise
from . import return_types
from .conv import avg_pool2d, col2im, conv2d, im2col, max_pool2d, max_pool2d_backward, max_pool2d_gather
from .creation import arange, empty, from_numpy, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .elementwise import (abs, add, astype, clip, clone, divide, equal, erf, exp, gelu, greater, greater_equal,
                          isfinite, leaky_relu, less, less_equal, log, logical_and, logical_or, maximum, minimum,
                          multiply, negative, not_equal, power, relu, sigmoid, sign, softplus, sqrt,
                          subtract, tanh, where)
from .joining import cat, concatenate, pad, split, stack
from .linalg import matmul
from .normalization import batch_norm_backward
from .recorded import relu_backward, relu_backward_colsum
from .reductions import amax, amin, argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .shape import (broadcast_to, expand, expand_dims, flatten, getitem, index_backward, permute, reshape, squeeze,
                    swapaxes, transpose, unsqueeze)
from .softmax import log_softmax, softmax
from .transfer import to

#: VJPs test this to tell ``create_graph`` (ops that record) from plain backward
records = True


def one_hot(labels, num_classes, dtype="float32"):
    """One-hot rows for integer ``labels`` (a constant: not differentiable)."""
    arr = labels.backend.F.one_hot(labels.array, num_classes, dtype)
    return Tensor._make(arr, labels.backend)


def _rev(fn):
    return lambda self, other: fn(other, self)


#: Tensor attribute: function. Every entry is an op function of this package.
METHODS = {
    "__add__": add, "__radd__": _rev(add), "__sub__": subtract, "__rsub__": _rev(subtract),
    "__mul__": multiply, "__rmul__": _rev(multiply), "__truediv__": divide, "__rtruediv__": _rev(divide),
    "__pow__": power, "__rpow__": _rev(power), "__matmul__": matmul, "__rmatmul__": _rev(matmul),
    "__neg__": negative, "__pos__": lambda self: self, "__abs__": abs,
    "__gt__": greater, "__ge__": greater_equal, "__lt__": less, "__le__": less_equal,
    "__eq__": equal, "__ne__": not_equal, "__getitem__": getitem, "__hash__": lambda self: id(self),
    "T": property(lambda self: transpose(self)),
    "view": reshape, "unsqueeze": expand_dims, "expand_dims": expand_dims, "clamp": clip, "pow": power,
    "add": add, "sub": subtract, "mul": multiply, "div": divide, "to": to, "clone": clone,
}
for _f in (exp, log, sqrt, abs, sign, clip, relu, leaky_relu, sigmoid, tanh, softplus, gelu, sum, mean, max, min,
           amax, amin, var, std, logsumexp, argmax, argmin, reshape, flatten, transpose, permute, swapaxes, expand,
           squeeze, softmax, log_softmax, matmul, astype, isfinite, erf, maximum, minimum):
    METHODS.setdefault(_f.__name__, _f)
for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)

engine.register_graph_namespace(sys.modules[__name__])

__all__ = sorted(set(_elementwise.__all__) | {
    "tensor", "zeros", "ones", "zeros_like", "ones_like", "full", "empty", "arange", "rand", "randn", "from_numpy",
    "cat", "concatenate", "pad", "split", "stack", "matmul", "amax", "amin", "argmax", "argmin", "return_types",
    "logsumexp", "max", "mean", "min", "std", "sum", "var", "broadcast_to", "expand", "expand_dims", "flatten", "permute", "reshape",
    "squeeze", "swapaxes", "transpose", "unsqueeze", "log_softmax", "softmax", "to", "one_hot", "conv2d",
    "max_pool2d", "avg_pool2d"})
