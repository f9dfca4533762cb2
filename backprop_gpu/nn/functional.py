"""Functional layers and losses (``import backprop_gpu.nn.functional as F``).

Losses take ``reduction`` in ``'mean'``, ``'sum'``, ``'none'`` (anything else is a
ValueError) and follow PyTorch's definitions: ``'mean'`` averages over every element
for the elementwise losses and over the non-ignored rows of the batch for
``cross_entropy`` and ``nll_loss``.

``linear``, ``cross_entropy``, ``nll_loss`` and ``binary_cross_entropy_with_logits``
are single ops (:mod:`backprop_gpu.ops.linear`, :mod:`backprop_gpu.ops.losses`);
this module checks their arguments. The other functions compose ops.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import ops
from ..ops import gelu, leaky_relu, relu, sigmoid, softplus, tanh  # noqa: F401 - re-exported
from ..ops.linear import linear, linear_relu  # noqa: F401 - re-exported
from ..ops.losses import BCEWithLogits, CrossEntropy, NLLLoss
from ..ops.normalization import batch_norm_train
from ..tape.op import apply, constant_like
from ..tape.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def silu(x):
    """``x * sigmoid(x)`` (SiLU, swish)."""
    return x * ops.sigmoid(x)


def mish(x):
    """``x * tanh(softplus(x))``."""
    return x * ops.tanh(ops.softplus(x))


def elu(x, alpha: float = 1.0):
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""
    return ops.where(x > 0, x, alpha * ops.expm1(ops.clip(x, None, 0.0)))  # clipped: no overflow where unused


def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
    """``x`` clamped to ``[min_val, max_val]``."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) must not exceed max_val ({max_val})")
    return ops.clip(x, min_val, max_val)


def one_hot(tensor, num_classes: int = -1):
    """``torch.nn.functional.one_hot``: int64 rows, ``num_classes=-1`` inferring the count."""
    return ops.one_hot(tensor, num_classes)


def softmax(input, dim: int = -1, *, axis=None):
    """Softmax along ``dim`` (PyTorch's keyword; ``axis`` is accepted too)."""
    return ops.softmax(input, axis=dim if axis is None else axis)


def log_softmax(input, dim: int = -1, *, axis=None):
    """Log-softmax along ``dim`` (PyTorch's keyword; ``axis`` is accepted too)."""
    return ops.log_softmax(input, axis=dim if axis is None else axis)


# --- linear -------------------------------------------------------------------------

# --- dropout and normalisation ----------------------------------------------------------

def _check_p(p):
    if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be a number in [0, 1], got {p!r}")


def dropout(x, p: float = 0.5, training: bool = True):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    1/(1-p), so the expectation is unchanged; ``x`` itself when not ``training`` or ``p == 0``.

    The mask comes from ``x``'s backend generator (reproducible with ``bg.manual_seed``).
    """
    _check_p(p)
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    b = x.backend
    mask = (b.random_uniform(x.shape, x.dtype) >= p).astype(x.dtype)
    mask *= 1 / (1 - p)
    return x * Tensor._make(mask, b)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (biased variance, as PyTorch),
    then scale by ``weight`` and shift by ``bias`` (both of ``normalized_shape``) if given."""
    normalized_shape = ((int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
                        else tuple(normalized_shape))
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or x.shape[x.ndim - k:] != normalized_shape:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end in normalized_shape {normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} has shape {t.shape}, expected {normalized_shape}")
    axes = tuple(range(x.ndim - k, x.ndim))
    d = x - x.mean(axis=axes, keepdims=True)
    y = d / ops.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
    """``relu(batch_norm(...))``; in training one op whose forward and backward each take the
    passes of batch normalisation alone. :class:`~backprop_gpu.nn.Sequential` uses it for a
    BatchNorm layer followed by a :class:`~backprop_gpu.nn.ReLU`."""
    return batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, _relu=True)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               _relu=False):
    """Batch normalisation of (N, C, ...) input, channels on axis 1 (PyTorch's argument order).

    ``training``: normalise with the batch mean and biased variance over every axis but 1,
    and, if running statistics are given, update them in place with ``momentum`` (the
    variance unbiased, as PyTorch). Otherwise normalise with the running statistics.
    In training it is one op (:class:`~backprop_gpu.ops.normalization.BatchNormTrain`).
    """
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs (N, C, ...) input, got shape {x.shape}")
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.shape != (c,):
            raise ValueError(f"batch_norm: {name} has shape {t.shape}, expected ({c},) for input {x.shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.device != x.device:  # before the running statistics change
            raise ops.DeviceMismatchError(f"batch_norm: input {x.shape} is on {x.device} but {name} is on "
                                          f"{t.device}")
    shape = (1, c) + (1,) * (x.ndim - 2)
    if training:
        n = x.numel() // c
        if n < 2:
            raise ValueError(f"batch_norm in training needs more than one value per channel, got input {x.shape}")
        b = x.backend
        mu, var = b.F.batch_norm_stats(x.array)
        if running_mean is not None:
            rm, rv = running_mean.array, running_var.array
            rm *= 1 - momentum
            rm += (momentum * mu).astype(rm.dtype, copy=False)
            rv *= 1 - momentum
            rv += (momentum * n / (n - 1) * var).astype(rv.dtype, copy=False)
            running_mean._version[0] += 1
            running_var._version[0] += 1
        invstd = 1 / b.xp.sqrt(var + eps)
        return batch_norm_train(x, weight, bias, mu, invstd, eps, relu=_relu)
    if running_mean is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    y = (x - running_mean.reshape(shape)) / ops.sqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return relu(y) if _relu else y


# --- losses: checks ------------------------------------------------------------------

def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _float_pair(name, input, target, reduction):
    """``target`` as a tensor of ``input``'s shape and dtype; clear errors otherwise."""
    _check_reduction(reduction)
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
    if not isinstance(target, Tensor):
        target = constant_like(target, input)
    if target.dtype.kind != "f":
        raise TypeError(f"{name}: target must be floating point (like input, {input.dtype}), "
                        f"got dtype {target.dtype}; convert it with .float() or .double()")
    if input.shape != target.shape:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {target.shape} differ "
                         "(no broadcasting: reshape the target)")
    if target.dtype != input.dtype:  # e.g. a float64 NumPy target for a float32 model
        target = target.astype(input.dtype)
    return target


# --- elementwise losses ----------------------------------------------------------------

def mse_loss(input, target, reduction: str = "mean"):
    """(input - target)², reduced."""
    d = input - _float_pair("mse_loss", input, target, reduction)
    return _reduce(d * d, reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """|input - target|, reduced."""
    return _reduce(ops.abs(input - _float_pair("l1_loss", input, target, reduction)), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """0.5 d² where |d| < delta, else delta (|d| - 0.5 delta), with d = input - target."""
    target = _float_pair("huber_loss", input, target, reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss delta must be positive, got {delta}")
    d = ops.abs(input - target)
    return _reduce(ops.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """0.5 d² / beta where |d| < beta, else |d| - 0.5 beta (``huber_loss / beta``; L1 for beta 0)."""
    target = _float_pair("smooth_l1_loss", input, target, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss beta must be non-negative, got {beta}")
    d = ops.abs(input - target)
    if beta == 0:
        return _reduce(d, reduction)
    return _reduce(ops.where(d < beta, (0.5 / beta) * d * d, d - 0.5 * beta), reduction)


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean", pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)`` against probabilities ``target`` (same shape),
    computed stably from the logits: max(x, 0) - x t + log1p(exp(-|x|)). ``pos_weight``
    (broadcast against the input, typically one weight per class on the last axis) weights
    the positive term, as PyTorch's."""
    target = _float_pair("binary_cross_entropy_with_logits", input, target, reduction)
    if pos_weight is None:
        return apply(BCEWithLogits, input, target, reduction=reduction)
    pw = pos_weight if isinstance(pos_weight, Tensor) else constant_like(
        np.asarray(pos_weight, dtype=input.dtype), input)
    if pw.requires_grad:
        pw = pw.detach()  # a constant weight, as a class prior; no gradient flows into it
    try:
        np.broadcast_shapes(pw.shape, input.shape)
    except ValueError:
        raise ValueError(f"binary_cross_entropy_with_logits: pos_weight of shape {pw.shape} does not broadcast "
                         f"against input {input.shape}") from None
    return apply(BCEWithLogits, input, target, pw.astype(input.dtype) if pw.dtype != input.dtype else pw,
                 reduction=reduction)


# --- classification losses --------------------------------------------------------------

def _class_target(name, input, target, ignore_index):
    """``(target tensor, number of counted rows)`` for (N, C) ``input`` and (N,) integer
    class indices; clear errors for wrong shapes, dtypes or out-of-range classes."""
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target), device=input.backend)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices (int64), got dtype {target.dtype} "
                        f"(shape {target.shape}); convert it with .long()")
    if input.ndim != 2 or target.shape != input.shape[:1]:
        raise ValueError(f"{name}: expected input (N, C) and target (N,), got input {input.shape} "
                         f"and target {target.shape}")
    if target.device != input.device:
        raise ValueError(f"{name}: input is on {input.device} but target is on {target.device}")
    c = input.shape[1]
    t = target.numpy()  # one transfer: the range check and the count of counted rows
    valid = t != ignore_index
    kept = t[valid]
    if kept.size and (kept.min() < 0 or kept.max() >= c):
        raise IndexError(f"{name}: target holds class indices in [{kept.min()}, {kept.max()}] "
                         f"but input {input.shape} has {c} classes (valid: 0..{c - 1}, or "
                         f"ignore_index {ignore_index})")
    return target, int(kept.size)


def _mean_divisor(reduction, count):
    # mean over the counted rows; no counted row: 0/0 = nan, as PyTorch
    return (count if count else float("nan")) if reduction == "mean" else 1


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0):
    """Cross-entropy of (N, C) logits against integer class indices (N,), as PyTorch's.

    One fused op (stable log-softmax and negative log-likelihood). ``'mean'`` divides by
    the number of rows whose target is not ``ignore_index``; ``label_smoothing`` mixes
    the one-hot target with the uniform distribution.
    """
    _check_reduction(reduction)
    if not isinstance(label_smoothing, numbers.Real) or not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    target, count = _class_target("cross_entropy", input, target, ignore_index)
    return apply(CrossEntropy, input, target, reduction=reduction, ignore=ignore_index, ls=float(label_smoothing),
                 count=_mean_divisor(reduction, count))


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Negative log-likelihood of (N, C) log-probabilities against integer class indices (N,).

    ``nll_loss(log_softmax(x, 1), t)`` equals ``cross_entropy(x, t)``.
    """
    _check_reduction(reduction)
    target, count = _class_target("nll_loss", input, target, ignore_index)
    return apply(NLLLoss, input, target, reduction=reduction, ignore=ignore_index,
                 count=_mean_divisor(reduction, count))


__all__ = ["relu", "leaky_relu", "gelu", "sigmoid", "tanh", "softplus", "softmax", "log_softmax", "linear", "dropout",
           "layer_norm", "batch_norm", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
           "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "silu", "mish", "elu", "hardtanh",
           "one_hot"]
