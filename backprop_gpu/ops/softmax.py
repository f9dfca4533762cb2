"""Numerically stable softmax and log-softmax, forward beside VJP."""
from __future__ import annotations

from ..tape.op import Op, apply, normalize_axis


class Softmax(Op):
    name = "softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        e = F.exp(x - F.max(x, axis=axis, keepdims=True))
        e /= F.sum(e, axis=axis, keepdims=True)
        return e

    @staticmethod
    def vjp(F, g, out, x, axis, needs):
        return (out * (g - F.sum(g * out, axis=axis, keepdims=True)),)


class LogSoftmax(Op):
    name = "log_softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        s = x - F.max(x, axis=axis, keepdims=True)
        return s - F.log(F.sum(F.exp(s), axis=axis, keepdims=True))

    @staticmethod
    def vjp(F, g, out, x, axis, needs):
        return (g - F.exp(out) * F.sum(g, axis=axis, keepdims=True),)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, shifted by the max for stability."""
    return apply(Softmax, x, axis=normalize_axis(axis, x.ndim)[0])


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, stable for large inputs."""
    return apply(LogSoftmax, x, axis=normalize_axis(axis, x.ndim)[0])
