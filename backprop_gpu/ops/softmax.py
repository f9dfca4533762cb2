"""Numerically stable softmax and log-softmax, forward beside VJP."""
from __future__ import annotations

from ..tape.op import Op, alias, apply, normalize_axis


class Softmax(Op):
    name = "softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        if x.size == 0:  # amax has no identity; an empty softmax is empty, as in PyTorch
            return x.copy()
        e = F.exp(x - F.amax(x, axis=axis, keepdims=True))
        e /= F.sum(e, axis=axis, keepdims=True)
        return e

    @staticmethod
    def vjp(F, g, out, x, axis):
        return (out * (g - F.sum(g * out, axis=axis, keepdims=True)),)


class LogSoftmax(Op):
    name = "log_softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        if x.size == 0:
            return x.copy()
        s = x - F.amax(x, axis=axis, keepdims=True)
        return s - F.log(F.sum(F.exp(s), axis=axis, keepdims=True))

    @staticmethod
    def vjp(F, g, out, x, axis):
        return (g - F.exp(out) * F.sum(g, axis=axis, keepdims=True),)


def softmax(x, dim=None, *, axis=None):
    """exp(x) / sum(exp(x)) along ``dim`` (or ``axis``; default the last), shifted by the max for stability."""
    axis = alias("softmax", dim, "dim", axis, "axis", -1)
    return apply(Softmax, x, axis=normalize_axis(axis, x.ndim)[0])


def log_softmax(x, dim=None, *, axis=None):
    """x - logsumexp(x) along ``dim`` (or ``axis``; default the last), stable for large inputs."""
    axis = alias("log_softmax", dim, "dim", axis, "axis", -1)
    return apply(LogSoftmax, x, axis=normalize_axis(axis, x.ndim)[0])
