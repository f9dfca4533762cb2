"""Weight initialisers with PyTorch's fan and gain rules; they fill tensors in place.

Samples come from the tensor's backend generator, seeded by ``bg.manual_seed``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..tape.mode import no_grad


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (as ``torch.nn.init.calculate_gain``)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "identity")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(t):
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {t.shape}")
    receptive = 1
    for s in t.shape[2:]:
        receptive *= s
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fill(t, values):
    with no_grad():
        t.array[...] = values
        t._version[0] += 1
    return t


def uniform_(t, a: float = 0.0, b: float = 1.0):
    """Fill with U(a, b)."""
    return _fill(t, a + (b - a) * t.backend.random_uniform(t.shape, t.dtype))


def normal_(t, mean: float = 0.0, std: float = 1.0):
    """Fill with N(mean, std²)."""
    return _fill(t, mean + std * t.backend.random_normal(t.shape, t.dtype))


def constant_(t, value: float):
    """Fill ``t`` with ``value`` in place, without recording; returns ``t``."""
    return _fill(t, value)


def zeros_(t):
    """Fill ``t`` with zeros in place, without recording; returns ``t``."""
    return _fill(t, 0)


def ones_(t):
    """Fill ``t`` with ones in place, without recording; returns ``t``."""
    return _fill(t, 1)


def _is_empty(t) -> bool:
    """Whether ``t`` has no elements: filling it is a no-op (and its fans may be 0)."""
    return 0 in tuple(t.shape)


def xavier_uniform_(t, gain: float = 1.0):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).

    A tensor with no elements is returned unchanged (torch divides by zero when both fans are 0).
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if _is_empty(t):
        return t
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -a, a)


def xavier_normal_(t, gain: float = 1.0):
    """Glorot normal: N(0, std²) with std = gain * sqrt(2 / (fan_in + fan_out)).

    A tensor with no elements is returned unchanged (torch divides by zero when both fans are 0).
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if _is_empty(t):
        return t
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(t, a, mode, nonlinearity):
    """gain / sqrt(fan), or None (after torch's warning) for a tensor with no elements, whose fan may be 0."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    gain = calculate_gain(nonlinearity, a)  # arguments are checked even when there is nothing to fill
    if _is_empty(t):
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    fan = fan_in if mode == "fan_in" else fan_out
    return gain / math.sqrt(fan)


def kaiming_uniform_(t, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan).

    As in torch, a tensor with no elements is returned unchanged, with a warning.
    """
    std = _kaiming_std(t, a, mode, nonlinearity)
    return t if std is None else uniform_(t, -math.sqrt(3.0) * std, math.sqrt(3.0) * std)


def kaiming_normal_(t, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He normal: N(0, std²) with std = gain / sqrt(fan).

    As in torch, a tensor with no elements is returned unchanged, with a warning.
    """
    std = _kaiming_std(t, a, mode, nonlinearity)
    return t if std is None else normal_(t, 0.0, std)



def reset_layer_(weight, bias=None):
    """PyTorch's default init of a Linear or convolution layer: ``kaiming_uniform_(weight,
    a=sqrt(5))`` and the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in from the weight's shape
    (U(0, 0) for a layer with no inputs, where torch leaves the bias uninitialised)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = _calculate_fan_in_and_fan_out(weight)[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)

__all__ = ["reset_layer_", "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_",
           "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "np"]
