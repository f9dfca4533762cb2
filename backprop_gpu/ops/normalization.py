"""Batch normalisation with batch statistics as one op, forward beside VJP.

The statistics are computed by a kernel before the op is applied and kept in
the node (per-channel arrays), so backward needs one pass for its sums and
one for the input gradient, instead of the dozen elementwise nodes of the
composed formula. Under ``create_graph`` the VJP runs
:func:`batch_norm_backward` below, which recomputes the statistics from ``x``
with recorded ops, so higher-order gradients see them as the functions of
``x`` that they are.

Group normalisation (and instance normalisation, its one-channel-per-group
case) is one op too, :class:`GroupNorm`, saving only its input.

Layer normalisation is :class:`LayerNorm`: the forward kernel normalises each row and keeps
its mean and 1/std, and the VJP is one kernel for the input's gradient and the weight's and
bias's (two launches on the cupy backend). Under ``create_graph`` the VJP runs the kernel's
statement (:func:`~backprop_gpu.array.kernels.reference.layer_norm_grad`) over the ops, with the
statistics recomputed from ``x`` by recorded ops.
"""
from __future__ import annotations

import math

from ..array.kernels.reference import channel_axes, layer_norm_grad, stats_dtype
from ..tape.op import Op, apply
from .elementwise import sqrt
from .recorded import relu_backward
from .reductions import mean, sum
from .shape import reshape


class BatchNormTrain(Op):
    """``(x - mean) * invstd * w + b`` per channel (axis 1), with ``mean`` and ``invstd`` the
    batch statistics of ``x``. Inputs: ``x``, then ``w`` and ``b`` if given."""
    name = "batch_norm"
    saves = ("x", "wb")
    relu = False

    @classmethod
    def forward(cls, F, x, *wb, mean, invstd, eps, has_w, has_b):
        w, b = _split(wb, has_w, has_b)
        return F.batch_norm_forward(x, mean, invstd, w, b, cls.relu)

    @classmethod
    def vjp(cls, F, g, out, x, *wb, mean, invstd, eps, has_w, has_b, needs):
        w, _ = _split(wb, has_w, has_b)
        gx, gw, gb = F.batch_norm_backward(g, x, mean, invstd, w, (needs[0], has_w and needs[1], has_b and needs[-1]),
                                           eps, out if cls.relu else None)
        return (gx,) + ((gw,) if has_w else ()) + ((gb,) if has_b else ())


class BatchNormReLUTrain(BatchNormTrain):
    """:class:`BatchNormTrain` followed by a ReLU, in the same passes forward and backward."""
    name = "batch_norm_relu"
    saves = ("x", "wb", "out")
    relu = True


def _split(wb, has_w, has_b):
    w = wb[0] if has_w else None
    b = wb[-1] if has_b else None
    return w, b


def batch_norm_train(x, weight, bias, mean_arr, invstd_arr, eps, relu=False):
    """Apply :class:`BatchNormTrain` (or, with ``relu``, :class:`BatchNormReLUTrain`) given the
    batch statistics (backend arrays of shape (C,))."""
    inputs = [x] + [t for t in (weight, bias) if t is not None]
    return apply(BatchNormReLUTrain if relu else BatchNormTrain, *inputs, mean=mean_arr, invstd=invstd_arr,
                 eps=eps, has_w=weight is not None, has_b=bias is not None)


def batch_norm_backward(g, x, mean_arr, invstd_arr, w, needs=(True, True, True), eps=1e-5, out=None):
    """Recorded form of the kernel ``F.batch_norm_backward`` (for ``create_graph``).

    ``mean_arr`` and ``invstd_arr`` are ignored: they are recomputed from ``x`` (with the
    ``eps`` the forward used) so that their dependence on ``x`` is on the tape.
    """
    if out is not None:
        g = relu_backward(g, out)
    axes = channel_axes(x.ndim)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    d = x - mean(x, axis=axes, keepdims=True)
    inv = 1 / sqrt(mean(d * d, axis=axes, keepdims=True) + eps)
    xhat = d * inv
    gb = sum(g, axis=axes)
    gw = sum(g * xhat, axis=axes)
    gx = None
    if needs[0]:
        gxhat = g if w is None else g * reshape(w, shape)
        gx = inv * (gxhat - mean(gxhat, axis=axes, keepdims=True)
                    - xhat * mean(gxhat * xhat, axis=axes, keepdims=True))
    return gx, (gw if needs[1] else None), (gb if needs[2] else None)


class GroupNorm(Op):
    """Group normalisation of (N, C, ...) input in one op: each sample's ``groups`` groups of
    C / groups channels are normalised over their channels and positions (biased variance),
    then scaled by ``w`` and shifted by ``b`` per channel. Inputs: ``x``, then ``w`` and
    ``b`` if given. Instance normalisation is the case ``groups == C``.

    It saves ``x`` alone: the VJP recomputes the per-group statistics (one pass), so it is
    one statement over the array namespace and, under ``create_graph``, over the ops.
    With xhat = (x - mean) invstd and m values per group:
    gx = invstd (gy - mean(gy) - xhat mean(gy xhat)), where gy = g w.
    """
    name = "group_norm"
    saves = ("x", "wb")

    @staticmethod
    def forward(F, x, *wb, groups, eps, has_w, has_b):
        w, b = _split(wb, has_w, has_b)
        xr = x.reshape(_rows(x.shape, groups))
        d = xr - xr.mean(axis=2, keepdims=True)
        invstd = 1 / F.sqrt((d * d).mean(axis=2, keepdims=True) + eps)
        y = (d * invstd.astype(x.dtype, copy=False)).reshape(x.shape)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if w is not None:
            y *= w.reshape(shape)
        if b is not None:
            y += b.reshape(shape)
        return y

    @staticmethod
    def vjp(F, g, out, x, *wb, groups, eps, has_w, has_b, needs):
        w, _ = _split(wb, has_w, has_b)
        rows = _rows(x.shape, groups)
        shape = (1, x.shape[1]) + (1,) * (len(x.shape) - 2)
        axes = channel_axes(len(x.shape))
        xr = F.reshape(x, rows)
        d = xr - F.mean(xr, axis=2, keepdims=True)
        invstd = 1 / F.sqrt(F.mean(d * d, axis=2, keepdims=True) + eps)
        xhat = d * invstd
        gx = gw = gb = None
        if needs[0]:
            gy = F.reshape(g if w is None else g * F.reshape(w, shape), rows)
            gx = F.reshape(invstd * (gy - F.mean(gy, axis=2, keepdims=True)
                                     - xhat * F.mean(gy * xhat, axis=2, keepdims=True)), x.shape)
        if has_w and needs[1]:
            gw = F.sum(g * F.reshape(xhat, x.shape), axis=axes)
        if has_b and needs[-1]:
            gb = F.sum(g, axis=axes)
        return (gx,) + ((gw,) if has_w else ()) + ((gb,) if has_b else ())


def _rows(shape, groups):
    """(N, groups, values per group): the shape :class:`GroupNorm` normalises the rows of."""
    return (shape[0], groups, math.prod(shape[1:]) // groups)


def group_norm(x, groups, weight, bias, eps):
    """Apply :class:`GroupNorm` (arguments checked by :func:`backprop_gpu.nn.functional.group_norm`)."""
    inputs = [x] + [t for t in (weight, bias) if t is not None]
    return apply(GroupNorm, *inputs, groups=groups, eps=eps, has_w=weight is not None, has_b=bias is not None)


class LayerNorm(Op):
    """Each row of the trailing ``cols`` values normalised (biased variance), times ``w`` plus
    ``b`` (each of those ``cols``, if given). Inputs: ``x``, then ``w`` and ``b`` if given.
    ``mean`` and ``rstd``: (rows,) arrays the forward fills with each row's mean and
    1 / sqrt(var + eps), which the VJP reads."""
    name = "layer_norm"
    saves = ("x", "wb")

    @staticmethod
    def forward(F, x, *wb, cols, eps, has_w, has_b, mean, rstd):
        w, b = _split(wb, has_w, has_b)
        y = F.layer_norm_forward(x.reshape(mean.shape[0], cols), None if w is None else w.reshape(cols),
                                 None if b is None else b.reshape(cols), eps, mean, rstd)
        return y.reshape(x.shape)

    @staticmethod
    def vjp(F, g, out, x, *wb, cols, eps, has_w, has_b, mean, rstd, needs):
        w, _ = _split(wb, has_w, has_b)
        w = None if w is None else F.reshape(w, (cols,))
        needs = (needs[0], has_w and needs[1], has_b and needs[-1])
        rows = (mean.shape[0], cols)
        if F.records:  # create_graph: the statistics as recorded functions of x, then the same statement
            x2 = F.reshape(x, rows)
            mu = F.mean(x2, axis=1, keepdims=True)
            d = x2 - mu
            r = 1 / F.sqrt(F.mean(d * d, axis=1, keepdims=True) + eps)
            gx, gw, gb = layer_norm_grad(F, F.reshape(g, rows), x2, mu, r, w, needs)
        else:
            gx, gw, gb = F.layer_norm_backward(g.reshape(rows), x.reshape(rows), mean, rstd, w, needs)
        wshape = tuple(wb[0].shape) if wb else ()
        return ((None if gx is None else F.reshape(gx, x.shape),)
                + ((None if gw is None else F.reshape(gw, wshape),) if has_w else ())
                + ((None if gb is None else F.reshape(gb, wshape),) if has_b else ()))


def layer_norm(x, k, weight, bias, eps):
    """Apply :class:`LayerNorm` over the last ``k`` axes of ``x`` (arguments checked by
    :func:`backprop_gpu.nn.functional.layer_norm`)."""
    cols = math.prod(x.shape[x.ndim - k:])
    rows = math.prod(x.shape[:x.ndim - k])
    arrays, dt = x.backend.arrays, stats_dtype(x.dtype)
    inputs = [x] + [t for t in (weight, bias) if t is not None]
    return apply(LayerNorm, *inputs, cols=cols, eps=eps, has_w=weight is not None, has_b=bias is not None,
                 mean=arrays.empty((rows,), dt), rstd=arrays.empty((rows,), dt))
