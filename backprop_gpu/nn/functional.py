"""Functional layers and losses (``import backprop_gpu.nn.functional as F``).

Losses take ``reduction`` in ``'mean'``, ``'sum'``, ``'none'`` and follow
PyTorch's definitions. ``cross_entropy`` and ``linear`` are single fused ops.
"""
from __future__ import annotations

import numpy as np

from ..ops import (abs, clip, exp, gelu, leaky_relu, log, log_softmax, maximum, mean, relu, sigmoid,  # noqa: F401
                   softmax, softplus, sqrt, sum, tanh, var, where)
from ..ops.core import Op, apply, constant_like
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _same_shape(name, input, target):
    if not isinstance(target, Tensor):
        target = constant_like(target, input)
    if input.shape != target.shape:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {target.shape} differ")
    return target


class LinearNoBias(Op):
    name = "linear"
    wants_needs = True

    @staticmethod
    def forward(xp, x, w):
        return x @ w.T

    writes_into = True

    @staticmethod
    def vjp(F, g, out, x, w, needs=(True, True), into=(None, None)):
        n_out, n_in = w.shape
        g2 = F.reshape(g, (-1, n_out))
        gx = F.reshape(F.matmul(g2, w), x.shape) if needs[0] else None
        gw = None
        if needs[1]:
            g2t, x2 = F.swapaxes(g2, 0, 1), F.reshape(x, (-1, n_in))
            # the weight gradient straight into its flat slot saves a copy of the weights' size
            gw = F.matmul(g2t, x2, out=into[1]) if into[1] is not None else F.matmul(g2t, x2)
        return gx, gw


class LinearOp(Op):
    """y = x @ W.T + b in one op: no transposed copy, bias added in place."""
    name = "linear"
    wants_needs = True

    @staticmethod
    def forward(xp, x, w, b):
        out = x @ w.T
        out += b
        return out

    writes_into = True

    @staticmethod
    def vjp(F, g, out, x, w, b, needs=(True, True, True), into=(None, None, None)):
        gx, gw = LinearNoBias.vjp(F, g, out, x, w, needs=needs[:2], into=into[:2])
        if not needs[2]:
            return gx, gw, None
        g2 = F.reshape(g, (-1, w.shape[0]))
        gb = F.sum(g2, axis=0, out=into[2]) if into[2] is not None else F.sum(g2, axis=0)
        return gx, gw, gb


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                         f"(expected last dimension {weight.shape[1]})")
    if bias is None:
        return apply(LinearNoBias, x, weight)
    return apply(LinearOp, x, weight, bias)


def dropout(x, p: float = 0.5, training: bool = True):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    keep = x.backend.random_uniform(x.shape, x.dtype) >= p
    mask = Tensor._make((keep / (1 - p)).astype(x.dtype), x.backend)
    return x * mask


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (biased variance, as PyTorch)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end in {normalized_shape}")
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    d = x - mu
    y = d / sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over (N, C) or (N, C, ...) inputs, channels on axis 1.

    In training the batch statistics normalise (biased variance) and the running
    statistics are updated in place with the unbiased variance, as PyTorch does.
    """
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs (N, C, ...) input, got shape {x.shape}")
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        n = x.size // x.shape[1]
        if n < 2:
            raise ValueError(f"batch_norm in training needs more than one value per channel, got input {x.shape}")
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        v = (d * d).mean(axis=axes, keepdims=True)
        if running_mean is not None:
            rm, rv = running_mean.array, running_var.array
            rm *= 1 - momentum
            rm += momentum * mu.array.reshape(rm.shape)
            rv *= 1 - momentum
            rv += momentum * v.array.reshape(rv.shape) * (n / (n - 1))
            running_mean._version[0] += 1
            running_var._version[0] += 1
        y = d / sqrt(v + eps)
    else:
        y = (x - running_mean.reshape(shape)) / sqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


# --- losses -----------------------------------------------------------------------

def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error."""
    d = input - _same_shape("mse_loss", input, target)
    return _reduce(d * d, reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """Mean absolute error."""
    return _reduce(abs(input - _same_shape("l1_loss", input, target)), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """0.5 d² where |d| < delta, else delta (|d| - 0.5 delta)."""
    if delta <= 0:
        raise ValueError(f"huber_loss delta must be positive, got {delta}")
    d = abs(input - _same_shape("huber_loss", input, target))
    return _reduce(where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


def _check_class_target(name, input, target, class_axis_size, ignore_index=None):
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target), device=input.backend)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    if input.ndim != 2 or target.shape != input.shape[:1]:
        raise ValueError(f"{name}: expected input (N, C) and target (N,), got input {input.shape} "
                         f"and target {target.shape}")
    if target.size:
        t = target.numpy()
        valid = t[t != ignore_index] if ignore_index is not None else t
        if valid.size and (valid.min() < 0 or valid.max() >= class_axis_size):
            raise IndexError(f"{name}: target holds class indices in [{valid.min()}, {valid.max()}] "
                             f"but input has {class_axis_size} classes")
    return target


class CrossEntropy(Op):
    """Stable log-softmax + NLL on (N, C) logits with integer targets, fused.

    Per row: loss = (1 - ls) * (lse - x[t]) + ls * (lse - mean(x)); rows whose
    target is ``ignore`` count for nothing. The VJP is
    (softmax - ((1 - ls) one_hot + ls / C)) * weight.
    """
    name = "cross_entropy"

    @staticmethod
    def forward(xp, x, t, reduction, ignore, ls, count):
        n, c = x.shape
        m = x.max(axis=1, keepdims=True)
        s = x - m
        lse = xp.log(xp.exp(s).sum(axis=1))
        tc = xp.where(t == ignore, 0, t)
        loss = lse - s[xp.arange(n), tc]
        if ls:
            loss = (1 - ls) * loss + ls * (lse - s.mean(axis=1))
        loss = xp.where(t == ignore, 0, loss).astype(x.dtype)
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / count if reduction == "mean" else total

    @staticmethod
    def vjp(F, g, out, x, t, reduction, ignore, ls, count):
        n, c = x.shape
        e = F.exp(x - F.max(x, axis=1, keepdims=True))
        p = e / F.sum(e, axis=1, keepdims=True)
        valid = t != ignore
        tc = F.where(valid, t, 0)
        target = F.one_hot(tc, c, x.dtype)
        if ls:
            target = target * (1 - ls) + ls / c
        if reduction == "none":
            scale = F.reshape(g, (n, 1))
        elif reduction == "mean":
            scale = g / count
        else:
            scale = g
        grad = (p - target) * scale
        return F.where(F.reshape(valid, (n, 1)), grad, 0), None


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0):
    """Cross-entropy of (N, C) logits against integer class targets (N,), in one stable fused op."""
    _check_reduction(reduction)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be floating point, got dtype {input.dtype}")
    target = _check_class_target("cross_entropy", input, target, input.shape[-1] if input.ndim else 0, ignore_index)
    count = int((target.numpy() != ignore_index).sum()) if reduction == "mean" else 1
    return apply(CrossEntropy, input, target, reduction=reduction, ignore=ignore_index, ls=float(label_smoothing),
                 count=max(count, 1) if count else float("nan"))


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Negative log-likelihood of (N, C) log-probabilities against integer targets."""
    _check_reduction(reduction)
    target = _check_class_target("nll_loss", input, target, input.shape[-1] if input.ndim else 0, ignore_index)
    t = target.numpy()
    valid = t != ignore_index
    rows = np.arange(len(t))[valid]
    picked = -input[(Tensor(rows, device=input.backend), Tensor(t[valid], device=input.backend))]
    if reduction == "none":
        from ..ops import index_backward
        return index_backward(picked, (len(t),), (Tensor(rows, device=input.backend).array,))
    if reduction == "sum":
        return picked.sum()
    return picked.sum() / max(int(valid.sum()), 1) if valid.any() else picked.sum() * float("nan")


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean", pos_weight=None):
    """Stable BCE on logits: max(x, 0) - x t + log(1 + exp(-|x|)) (with optional ``pos_weight``)."""
    target = _same_shape("binary_cross_entropy_with_logits", input, target)
    if pos_weight is None:
        loss = relu(input) - input * target + softplus(-abs(input))
    else:
        lw = 1 + (pos_weight - 1) * target
        loss = (1 - target) * input + lw * (softplus(-abs(input)) + relu(-input))
    return _reduce(loss, reduction)
