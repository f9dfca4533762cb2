"""Numerically stable softmax and log-softmax, forward beside VJP.

Over the last axis both directions are the namespace's fused kernels (``F.softmax_forward`` and
so on: one pass over each row, one launch on the cupy backend); other axes, and the VJP under
``create_graph``, run the same statements (:mod:`backprop_gpu.array.kernels.reference`) over
that axis with the namespace's functions, which record under ``create_graph``.
"""
from __future__ import annotations

from ..array.kernels.reference import log_softmax_grad, log_softmax as _log_softmax, softmax as _softmax
from ..array.kernels.reference import softmax_grad
from ..tape.op import Op, alias, apply, normalize_axis


class Softmax(Op):
    name = "softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        if x.size == 0:  # amax has no identity; an empty softmax is empty, as in PyTorch
            return x.copy()
        return F.softmax_forward(x) if axis == x.ndim - 1 else _softmax(F, x, axis)

    @staticmethod
    def vjp(F, g, out, x, axis):
        if F.records or axis != out.ndim - 1:
            return (softmax_grad(F, g, out, axis),)
        return (F.softmax_backward(g, out),)


class LogSoftmax(Op):
    name = "log_softmax"
    saves = ('out',)

    @staticmethod
    def forward(F, x, axis):
        if x.size == 0:
            return x.copy()
        return F.log_softmax_forward(x) if axis == x.ndim - 1 else _log_softmax(F, x, axis)

    @staticmethod
    def vjp(F, g, out, x, axis):
        if F.records or axis != out.ndim - 1:
            return (log_softmax_grad(F, g, out, axis),)
        return (F.log_softmax_backward(g, out),)


def softmax(x, dim=None, *, axis=None):
    """exp(x) / sum(exp(x)) along ``dim`` (or ``axis``; default the last), shifted by the max for stability."""
    axis = alias("softmax", dim, "dim", axis, "axis", -1)
    return apply(Softmax, x, axis=normalize_axis(axis, x.ndim)[0])


def log_softmax(x, dim=None, *, axis=None):
    """x - logsumexp(x) along ``dim`` (or ``axis``; default the last), stable for large inputs."""
    axis = alias("log_softmax", dim, "dim", axis, "axis", -1)
    return apply(LogSoftmax, x, axis=normalize_axis(axis, x.ndim)[0])
