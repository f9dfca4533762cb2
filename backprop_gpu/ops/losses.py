"""Losses that are single ops: binary cross-entropy on logits, cross-entropy and NLL.

Their argument checks live in :mod:`backprop_gpu.nn.functional`, which applies them.
"""
from __future__ import annotations

import math

from ..array.kernels.reference import cross_entropy_grad
from ..tape.op import Op


class BCEWithLogits(Op):
    """Stable binary cross-entropy on logits, elementwise then reduced, in one op.

    loss = max(x, 0) - x t + log1p(exp(-|x|)); with ``pos_weight`` p (a third input,
    constant): (1 - t) x + (1 + (p - 1) t) (log1p(exp(-|x|)) + max(-x, 0)).
    VJP in x: (sigmoid(x) - t) g, or ((1 - t) - (1 + (p - 1) t) sigmoid(-x)) g;
    in t: -x g, or (-x + (p - 1) softplus(-x)) g.
    """
    name = "binary_cross_entropy_with_logits"
    saves = ("x", "t", "pw")

    @staticmethod
    def forward(F, x, t, *pw, reduction):
        tail = F.log1p(F.exp(-F.abs(x)))
        if pw:
            loss = (1 - t) * x + (1 + (pw[0] - 1) * t) * (tail + F.maximum(-x, 0))
        else:
            loss = F.maximum(x, 0) - x * t + tail
        loss = loss.astype(x.dtype, copy=False)
        if reduction == "none":
            return loss
        return loss.mean() if reduction == "mean" else loss.sum()

    @staticmethod
    def vjp(F, g, out, x, t, *pw, reduction, needs):
        scale = g / math.prod(x.shape) if reduction == "mean" else g  # x is a tensor under create_graph
        gx = gt = None
        if pw:
            p = pw[0]
            if needs[0]:
                gx = ((1 - t) - (1 + (p - 1) * t) * F.sigmoid(-x)) * scale
            if needs[1]:
                softplus_neg = F.maximum(-x, 0) + F.log(1 + F.exp(-F.abs(x)))
                gt = ((p - 1) * softplus_neg - x) * scale
            return gx, gt, None
        if needs[0]:
            gx = (F.sigmoid(x) - t) * scale
        if needs[1]:
            gt = -x * scale
        return gx, gt


def _row_scale(F, g, reduction, n, count):
    if reduction == "none":
        return F.reshape(g, (n, 1))
    return g / count if reduction == "mean" else g


class CrossEntropy(Op):
    """Stable log-softmax + NLL on (N, C) logits with integer targets, fused in one op.

    Per row, with lse = logsumexp(x) and ls the label smoothing:
    loss = (1 - ls) (lse - x[t]) + ls (lse - mean(x)); rows whose target is ``ignore``
    count for nothing. The VJP is (softmax(x) - ((1 - ls) one_hot(t) + ls / C)) g / count.
    Both are the namespace's fused kernels (``F.cross_entropy_forward``/``_backward``: one
    launch each on the cupy backend). ``stats``: None, or the 0-d ``(count, bad)`` arrays the
    forward fills on the device (the counted rows, which ``count`` then is, and the target range
    check; see :func:`backprop_gpu.nn.functional.cross_entropy`).
    """
    name = "cross_entropy"
    saves = ("x", "t")

    @staticmethod
    def forward(F, x, t, reduction, ignore, ls, count, stats=None):
        return F.cross_entropy_forward(x, t, ignore, ls, reduction, count, stats)

    @staticmethod
    def vjp(F, g, out, x, t, reduction, ignore, ls, count, stats=None):
        if F.records:  # create_graph: the same statement over the ops namespace records itself
            return cross_entropy_grad(F, g, x, t, ignore, ls, reduction, count), None
        return F.cross_entropy_backward(g, x, t, ignore, ls, reduction, count), None


class NLLLoss(Op):
    """-x[i, t_i] per row (0 where t_i is ``ignore``), reduced; the VJP is -one_hot(t) g / count."""
    name = "nll_loss"
    saves = ("t",)

    @staticmethod
    def forward(F, x, t, reduction, ignore, count):
        ignored = t == ignore
        loss = F.where(ignored, 0, -x[F.arange(x.shape[0]), F.where(ignored, 0, t)]).astype(x.dtype, copy=False)
        if reduction == "none":
            return loss
        total = loss.sum()
        return (total / count).astype(x.dtype) if reduction == "mean" else total

    @staticmethod
    def vjp(F, g, out, x, t, reduction, ignore, count):
        n, c = x.shape
        valid = F.reshape(t != ignore, (n, 1))
        pick = F.one_hot(F.where(t != ignore, t, 0), c, x.dtype)
        return F.where(valid, -pick * _row_scale(F, g, reduction, n, count), 0), None


__all__ = ["BCEWithLogits", "CrossEntropy", "NLLLoss"]
