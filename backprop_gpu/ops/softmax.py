"""Numerically stable softmax and log-softmax, forward beside VJP."""
from __future__ import annotations

from .core import Op, apply, normalize_axis


class Softmax(Op):
    name = "softmax"
    saves_inputs = False
    saves_output = True

    @staticmethod
    def forward(xp, x, axis):
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        e /= xp.sum(e, axis=axis, keepdims=True)
        return e

    @staticmethod
    def vjp(F, g, out, x, axis):
        return (out * (g - F.sum(g * out, axis=axis, keepdims=True)),)


class LogSoftmax(Op):
    name = "log_softmax"
    saves_inputs = False
    saves_output = True

    @staticmethod
    def forward(xp, x, axis):
        s = x - xp.max(x, axis=axis, keepdims=True)
        return s - xp.log(xp.sum(xp.exp(s), axis=axis, keepdims=True))

    @staticmethod
    def vjp(F, g, out, x, axis):
        return (g - F.exp(out) * F.sum(g, axis=axis, keepdims=True),)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, shifted by the max for stability."""
    return apply(Softmax, x, axis=normalize_axis(axis, x.ndim)[0])


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, stable for large inputs."""
    return apply(LogSoftmax, x, axis=normalize_axis(axis, x.ndim)[0])
