"""All differentiable ops, as functions with NumPy's names and signatures.

This module doubles as the namespace VJPs run on in ``create_graph`` mode (see
:mod:`backprop_gpu.ops.core`), and it installs the Tensor's operators and methods.
"""
from __future__ import annotations

from ..tensor import Tensor
from .activations import (erf, gelu, leaky_relu, relu, relu_backward, relu_backward_colsum, sigmoid, softplus,
                          tanh)
from .core import DeviceMismatchError, Op, apply
from .elementwise import (abs, add, astype, clip, clone, divide, equal, exp, greater, greater_equal, isfinite,
                          less, less_equal, log, logical_and, logical_or, maximum, minimum, multiply,
                          negative, not_equal, ones_like, power, sign, sqrt, subtract, where, zeros_like)
from .conv import avg_pool2d, col2im, conv2d, im2col, max_pool2d, max_pool2d_backward, max_pool2d_gather
from .joining import cat, concatenate, pad, split, stack
from .linalg import matmul
from .normalization import batch_norm_backward
from .reductions import argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .shape import (broadcast_to, expand, expand_dims, flatten, getitem, index_backward, permute, reshape,
                    squeeze, swapaxes, transpose, unsqueeze)
from .softmax import log_softmax, softmax
from .transfer import to


def one_hot(labels, num_classes, dtype="float32"):
    """One-hot rows for integer ``labels`` (a constant: not differentiable)."""
    arr = labels.backend.F.one_hot(labels.array, num_classes, dtype)
    return Tensor._make(arr, labels.backend)


def _rev(fn):
    return lambda self, other: fn(other, self)


def _install():
    T = Tensor
    T.__add__, T.__radd__ = add, _rev(add)
    T.__sub__, T.__rsub__ = subtract, _rev(subtract)
    T.__mul__, T.__rmul__ = multiply, _rev(multiply)
    T.__truediv__, T.__rtruediv__ = divide, _rev(divide)
    T.__pow__, T.__rpow__ = power, _rev(power)
    T.__matmul__, T.__rmatmul__ = matmul, _rev(matmul)
    T.__neg__ = negative
    T.__pos__ = lambda self: self
    T.__abs__ = abs
    T.__gt__, T.__ge__, T.__lt__, T.__le__ = greater, greater_equal, less, less_equal
    T.__eq__, T.__ne__ = equal, not_equal
    T.__getitem__ = getitem
    T.__hash__ = lambda self: id(self)
    for f in (exp, log, sqrt, abs, sign, clip, relu, leaky_relu, sigmoid, tanh, softplus, gelu, sum, mean,
              max, min, var, std, logsumexp, argmax, argmin, reshape, flatten, transpose, permute, swapaxes,
              expand, squeeze, unsqueeze, softmax, log_softmax, matmul, astype, isfinite, erf, maximum, minimum):
        setattr(T, f.__name__, f)
    T.T = property(lambda self: transpose(self))
    T.view = reshape
    T.unsqueeze = T.expand_dims = expand_dims
    T.clamp = clip
    T.pow = power
    T.add, T.sub, T.mul, T.div = add, subtract, multiply, divide


_install()
