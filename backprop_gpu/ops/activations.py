"""Activation functions, forward beside VJP."""
from __future__ import annotations

import math

from .core import Op, apply


class Relu(Op):
    name = "relu"
    saves_inputs = False
    saves_output = True
    forward = staticmethod(lambda xp, x: xp.maximum(x, 0))
    vjp = staticmethod(lambda F, g, out, x: (F.relu_backward(g, out),))


def relu_backward(g, out):
    """``g`` where ``out > 0``, else 0: the gradient through a ReLU with output ``out``
    (the recorded form of the array namespace's kernel, for ``create_graph``)."""
    return g * (out > 0)


def relu_backward_colsum(g, out, colsum=None):
    """Recorded form of the kernel of that name (``colsum``, an output buffer, is not used)."""
    from .reductions import sum
    from .shape import reshape

    gm = relu_backward(g, out)
    return gm, sum(reshape(gm, (-1, gm.shape[-1])), axis=0)


class LeakyRelu(Op):
    name = "leaky_relu"
    forward = staticmethod(lambda xp, x, slope: xp.where(x > 0, x, x * slope))
    vjp = staticmethod(lambda F, g, out, x, slope: (F.where(x > 0, g, g * slope),))


class Sigmoid(Op):
    name = "sigmoid"
    saves_inputs = False
    saves_output = True
    # tanh form: no overflow for large |x|
    forward = staticmethod(lambda xp, x: 0.5 * (xp.tanh(0.5 * x) + 1))
    vjp = staticmethod(lambda F, g, out, x: (g * out * (1 - out),))


class Tanh(Op):
    name = "tanh"
    saves_inputs = False
    saves_output = True
    forward = staticmethod(lambda xp, x: xp.tanh(x))
    vjp = staticmethod(lambda F, g, out, x: (g * (1 - out * out),))


class Softplus(Op):
    """log(1 + e^x), computed as logaddexp(0, x) so it never overflows."""
    name = "softplus"
    forward = staticmethod(lambda xp, x: xp.logaddexp(0, x))
    vjp = staticmethod(lambda F, g, out, x: (g * F.sigmoid(x),))


_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT2PI = 1 / math.sqrt(2 * math.pi)
_TANH_C = math.sqrt(2 / math.pi)


class GeluErf(Op):
    """Exact GELU, x * Phi(x), PyTorch's default."""
    name = "gelu"

    @staticmethod
    def forward(xp, x, erf):
        return x * (0.5 * (1 + erf(x * _INV_SQRT2)))

    @staticmethod
    def vjp(F, g, out, x, erf):
        cdf = 0.5 * (1 + F.erf(x * _INV_SQRT2))
        pdf = F.exp(-0.5 * x * x) * _INV_SQRT2PI
        return (g * (cdf + x * pdf),)


class GeluTanh(Op):
    """GELU's tanh approximation (``approximate='tanh'``)."""
    name = "gelu_tanh"

    @staticmethod
    def forward(xp, x):
        return 0.5 * x * (1 + xp.tanh(_TANH_C * (x + 0.044715 * x ** 3)))

    @staticmethod
    def vjp(F, g, out, x):
        t = F.tanh(_TANH_C * (x + 0.044715 * x ** 3))
        dt = (1 - t * t) * _TANH_C * (1 + 3 * 0.044715 * x * x)
        return (g * (0.5 * (1 + t) + 0.5 * x * dt),)


def relu(x):
    """max(x, 0)."""
    return apply(Relu, x)


def leaky_relu(x, negative_slope: float = 0.01):
    """x where x > 0, else negative_slope * x."""
    return apply(LeakyRelu, x, slope=negative_slope)


def sigmoid(x):
    """1 / (1 + e^-x), computed without overflow."""
    return apply(Sigmoid, x)


def tanh(x):
    """Hyperbolic tangent."""
    return apply(Tanh, x)


def softplus(x):
    """log(1 + e^x), stable for large |x|."""
    return apply(Softplus, x)


def gelu(x, approximate: str = "none"):
    """GELU: exact (erf) by default, or the tanh approximation with ``approximate='tanh'``."""
    if approximate == "tanh":
        return apply(GeluTanh, x)
    if approximate != "none":
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(GeluErf, x, erf=x.backend.erf)


class Erf(Op):
    name = "erf"
    forward = staticmethod(lambda xp, x, erf: erf(x))
    vjp = staticmethod(lambda F, g, out, x, erf: (g * (2 / math.sqrt(math.pi)) * F.exp(-x * x),))


def erf(x):
    """Elementwise error function (GELU's higher-order gradients go through it)."""
    return apply(Erf, x, erf=x.backend.erf)
