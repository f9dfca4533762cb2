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

import math
import numbers
import warnings

import numpy as np

from .. import ops
from ..array.devices import gpu_array_device
from ..array.dtypes import is_floating
from ..ops.adaptive_pooling import adaptive_avg_pool1d as _adaptive_avg_pool1d
from ..ops.adaptive_pooling import adaptive_avg_pool2d as _adaptive_avg_pool2d
from ..ops.adaptive_pooling import adaptive_max_pool1d as _adaptive_max_pool1d
from ..ops.adaptive_pooling import adaptive_max_pool2d as _adaptive_max_pool2d
from ..ops.conv import avg_pool2d, conv2d, max_pool2d  # noqa: F401 - re-exported
from ..ops.conv import conv1d as _conv1d
from ..ops.conv_transpose import conv_transpose2d  # noqa: F401 - re-exported
from ..ops import gelu, leaky_relu, relu, sigmoid, softplus, tanh  # noqa: F401 - re-exported
from ..ops.linear import linear, linear_relu  # noqa: F401 - re-exported
from ..ops.dropout import dropout as _dropout
from ..ops.losses import BCEWithLogits, CrossEntropy, NLLLoss
from ..ops.normalization import batch_norm_train
from ..ops.normalization import group_norm as _group_norm
from ..ops.normalization import layer_norm as _layer_norm
from ..ops.upsampling import upsample_nearest as _upsample_nearest
from ..tape.mode import is_anomaly_enabled, state
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
    # kept where uniform >= p: the complement of bernoulli(p), drawn and applied in one kernel
    return _dropout(x, p)


def _channel_dropout(x, p, training, what, dims):
    """Dropout of whole channels: one keep/drop draw per (sample, channel) of (N, C, *spatial)."""
    _check_p(p)
    if x.ndim not in (dims + 1, dims + 2):
        raise ValueError(f"{what} expects (N, C, {dims} spatial dims) or (C, {dims} spatial dims) input, "
                         f"got shape {x.shape}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    lead = x.shape[:-dims] if x.ndim == dims + 2 else x.shape[:1]
    b = x.backend
    keep = (~b.random_bernoulli(lead, p, x.dtype)).astype(x.dtype)
    keep *= 1 / (1 - p)
    return x * Tensor._make(keep.reshape(lead + (1,) * dims), b)


def dropout1d(x, p: float = 0.5, training: bool = True):
    """Zero whole channels of (N, C, L) input with probability ``p``, scaling the rest by 1/(1-p)."""
    return _channel_dropout(x, p, training, "dropout1d", 1)


def dropout2d(x, p: float = 0.5, training: bool = True):
    """Zero whole channels of (N, C, H, W) input with probability ``p``, scaling the rest by 1/(1-p)."""
    return _channel_dropout(x, p, training, "dropout2d", 2)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (biased variance, as PyTorch),
    then scale by ``weight`` and shift by ``bias`` (both of ``normalized_shape``) if given. One op
    (:class:`~backprop_gpu.ops.normalization.LayerNorm`) over the trailing axes flattened to rows."""
    x, weight, bias = _autocast("layer_norm", x, weight, bias)
    normalized_shape = ((int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
                        else tuple(normalized_shape))
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or x.shape[x.ndim - k:] != normalized_shape:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end in normalized_shape {normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} has shape {t.shape}, expected {normalized_shape}")
    return _layer_norm(x, k, weight, bias, float(eps))


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


def _autocast(name, *xs):
    """Autocast's casts for a function built of several ops (the hook ``apply`` calls for one op)."""
    return xs if state.cast is None else state.cast(name, xs)


def _float_pair(name, input, target, reduction):
    """``target`` as a tensor of ``input``'s shape and dtype; clear errors otherwise."""
    _check_reduction(reduction)
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
    if not isinstance(target, Tensor):
        target = constant_like(target, input)
    if not is_floating(target.dtype):
        raise TypeError(f"{name}: target must be floating point (like input, {input.dtype}), "
                        f"got dtype {target.dtype}; convert it with .float() or .double()")
    if input.shape != target.shape:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {target.shape} differ "
                         "(no broadcasting: reshape the target)")
    if target.dtype != input.dtype:  # e.g. a float64 NumPy target for a float32 model
        target = target.astype(input.dtype)
    return target


# --- elementwise losses ----------------------------------------------------------------

def _weighted(loss, weight, reduction, weighted_mean=False):
    """``loss`` (unreduced) times the broadcast ``weight`` (a constant: no gradient flows into it),
    then reduced: torch's elementwise loss weight. ``weighted_mean``: 'mean' divides by the summed
    weights rather than the element count (torch's ``mse_loss`` and ``l1_loss``)."""
    if weight is None:
        return _reduce(loss, reduction)
    if not isinstance(weight, Tensor):
        weight = constant_like(np.asarray(weight, dtype=loss.dtype), loss)
    w = (weight if weight.dtype == loss.dtype else weight.astype(loss.dtype)).detach()
    if weighted_mean and reduction == "mean":
        return (loss * w).sum() / ops.broadcast_to(w, loss.shape).sum()
    return _reduce(loss * w, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """(input - target)², times ``weight`` (broadcast) if given, reduced ('mean' then divides by the
    summed weights, as torch); torch's signature (the deprecated ``size_average``/``reduce`` raise
    NotImplementedError)."""
    _legacy_reduction("mse_loss", size_average, reduce)
    input, target = _autocast("mse_loss", input, target)
    d = input - _float_pair("mse_loss", input, target, reduction)
    return _weighted(d * d, weight, reduction, weighted_mean=True)


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """|input - target|, times ``weight`` (broadcast) if given, reduced ('mean' divides by the summed
    weights, as torch); torch's signature."""
    _legacy_reduction("l1_loss", size_average, reduce)
    input, target = _autocast("l1_loss", input, target)
    return _weighted(ops.abs(input - _float_pair("l1_loss", input, target, reduction)), weight, reduction,
                     weighted_mean=True)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0, weight=None):
    """0.5 d² where |d| < delta, else delta (|d| - 0.5 delta), with d = input - target; times
    ``weight`` (broadcast) if given."""
    input, target = _autocast("huber_loss", input, target)
    target = _float_pair("huber_loss", input, target, reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss delta must be positive, got {delta}")
    d = ops.abs(input - target)
    return _weighted(ops.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), weight, reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
    """0.5 d² / beta where |d| < beta, else |d| - 0.5 beta (``huber_loss / beta``; L1 for beta 0)."""
    _legacy_reduction("smooth_l1_loss", size_average, reduce)
    input, target = _autocast("smooth_l1_loss", input, target)
    target = _float_pair("smooth_l1_loss", input, target, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss beta must be non-negative, got {beta}")
    d = ops.abs(input - target)
    if beta == 0:
        return _reduce(d, reduction)
    return _reduce(ops.where(d < beta, (0.5 / beta) * d * d, d - 0.5 * beta), reduction)


#: torch clamps BCE's logs at -100; taking the log of max(p, e^-100) gives the same values
_TINY = math.exp(-100.0)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
    """-(t log x + (1 - t) log(1 - x)) of probabilities ``input``, each log at least -100 as torch's
    (so that x = 0 or 1 gives a finite loss, 100 per element); times ``weight`` (broadcast) if given.

    The logs are taken of ``max(x, e^-100)`` and ``max(1 - x, e^-100)``, so the gradient is finite
    everywhere; where x is exactly 0 or 1 it is 0 (torch's is ±1e12 there). Inputs outside
    [0, 1] are not checked (that would synchronise with the device)."""
    _legacy_reduction("binary_cross_entropy", size_average, reduce)
    target = _float_pair("binary_cross_entropy", input, target, reduction)
    log_x = ops.log(ops.clamp(input, min=_TINY))
    log_1mx = ops.log(ops.clamp(1.0 - input, min=_TINY))
    return _weighted(-(target * log_x + (1.0 - target) * log_1mx), weight, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction: str = "mean", pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)`` against probabilities ``target`` (same shape),
    computed stably from the logits: max(x, 0) - x t + log1p(exp(-|x|)); torch's signature.
    ``pos_weight`` (broadcast against the input, typically one weight per class on the last axis)
    weights the positive term, and ``weight`` (broadcast) each element's loss, as PyTorch's."""
    _legacy_reduction("binary_cross_entropy_with_logits", size_average, reduce)
    if weight is not None:
        loss = binary_cross_entropy_with_logits(input, target, reduction="none", pos_weight=pos_weight)
        return _weighted(loss, weight, reduction)
    target = _float_pair("binary_cross_entropy_with_logits", input, target, reduction)
    if pos_weight is None:
        return apply(BCEWithLogits, input, target, reduction=reduction)
    if isinstance(pos_weight, Tensor):
        pw = pos_weight
    elif gpu_array_device(pos_weight) is not None:  # a raw CuPy array: never through np.asarray
        pw = Tensor(pos_weight, dtype=input.dtype, device=input.backend)
    else:
        pw = constant_like(np.asarray(pos_weight, dtype=input.dtype), input)
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

def _class_target(name, input, target, ignore_index, kernel_check=False):
    """``(target tensor, mean divisor)`` for (N, C) ``input`` and (N,) integer class indices; clear
    errors for wrong shapes, dtypes or out-of-range classes.

    The range check and the count of counted rows (the divisor of ``reduction='mean'``) never
    make the host wait for the device: host targets (NumPy arrays, lists, CPU tensors) are
    checked and counted on the host, before a target headed for a GPU is copied there. A target
    already on a GPU is checked there, and the count stays there as a 0-d array; the check is
    deferred to the next synchronisation (``.item()``, ``.numpy()``, ``bg.cuda.synchronize()``;
    see :class:`~backprop_gpu.array.modules.CupyArrays`), which raises the same IndexError, unless
    anomaly detection is on, which checks at once.

    ``kernel_check``: the caller's loss kernel counts and checks a device target itself (the
    ``stats`` of ``F.cross_entropy_forward``, no launch of its own); such a target then comes
    back with ``(count, bad)``, two empty 0-d device arrays for the kernel to fill, in place of
    the divisor, and the caller queues the check with :func:`_defer_class_check` once the
    kernel is launched.
    """
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
    host = None
    if not isinstance(target, Tensor) and gpu_array_device(target) is not None:
        target = Tensor(target, device=input.backend)  # a raw CuPy array: np.asarray would be refused
    if not isinstance(target, Tensor):
        host = np.asarray(target)
        if host.dtype.kind not in "iu":
            raise TypeError(f"{name}: target must hold integer class indices (int64), got dtype {host.dtype} "
                            f"(shape {host.shape}); convert it with .long()")
    elif target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices (int64), got dtype {target.dtype} "
                        f"(shape {target.shape}); convert it with .long()")
    shape = host.shape if host is not None else target.shape
    if input.ndim != 2 or shape != input.shape[:1]:
        raise ValueError(f"{name}: expected input (N, C) and target (N,), got input {input.shape} "
                         f"and target {shape}")
    if host is None and target.device != input.device:
        raise ValueError(f"{name}: input is on {input.device} but target is on {target.device}")
    c = input.shape[1]
    if host is not None or target.backend.is_host or is_anomaly_enabled():
        if host is None:
            host = target.numpy()  # free on the CPU; under anomaly detection, a sync by request
        _check_classes(name, host, ignore_index, input.shape, c)
        if not isinstance(target, Tensor):
            target = Tensor(host, device=input.backend)
        return target, int(np.count_nonzero(host != ignore_index))
    arrays, t = target.backend.arrays, target.array
    if kernel_check:
        with arrays.cuda_device:  # allocations: no launch
            return target, (arrays.xp.empty((), input.dtype), arrays.xp.empty((), np.bool_))
    with arrays.cuda_device:  # on the target's GPU, whichever is current
        # 0/0 = nan with no counted row, as PyTorch; one kernel on the cupy backend
        count, bad = arrays.xp.empty((), input.dtype), arrays.xp.empty((), np.bool_)
        target.backend.F.class_target_stats(t, c, ignore_index, count, bad)
    _defer_class_check(name, input, target, ignore_index, bad)
    return target, count


def _defer_class_check(name, input, target, ignore_index, bad):
    """Queue the range check of device ``target`` whose failure flag ``bad`` (0-d) is on the device."""
    target.backend.arrays.defer_check(
        bad, lambda: _check_classes(name, target.numpy(), ignore_index, input.shape, input.shape[1]))


def _check_classes(name, t, ignore_index, input_shape, c):
    kept = t[t != ignore_index]
    if kept.size and (kept.min() < 0 or kept.max() >= c):
        raise IndexError(f"{name}: target holds class indices in [{kept.min()}, {kept.max()}] "
                         f"but input {input_shape} has {c} classes (valid: 0..{c - 1}, or "
                         f"ignore_index {ignore_index})")


def _mean_divisor(reduction, count):
    """The divisor of the summed loss: the counted rows for ``'mean'`` (a host int or a 0-d
    device array; no counted row gives 0/0 = nan, as PyTorch), else 1."""
    if reduction != "mean":
        return 1
    if isinstance(count, int):
        return count if count else float("nan")
    return count


def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """Cross-entropy of (N, C) logits against integer class indices (N,), as PyTorch's (same signature;
    the deprecated ``size_average``/``reduce`` raise NotImplementedError).

    One fused op (stable log-softmax and negative log-likelihood). ``'mean'`` divides by
    the number of rows whose target is not ``ignore_index``; ``label_smoothing`` mixes
    the one-hot target with the uniform distribution. With class weights ``weight`` (C,)
    each row counts ``weight[target]`` times and ``'mean'`` divides by the summed weights of
    the counted rows, as torch (a log-softmax, then :func:`_weighted_class_loss`).
    """
    _legacy_reduction("cross_entropy", size_average, reduce)
    _check_reduction(reduction)
    if not isinstance(label_smoothing, numbers.Real) or not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if weight is not None:
        target = _class_target("cross_entropy", input, target, ignore_index)[0]
        return _weighted_class_loss("cross_entropy", log_softmax(input, 1), target, weight, reduction, ignore_index,
                                    float(label_smoothing))
    target, count = _class_target("cross_entropy", input, target, ignore_index, kernel_check=True)
    if type(count) is tuple:  # a device target: the loss kernel counts the rows and checks the classes
        loss = apply(CrossEntropy, input, target, reduction=reduction, ignore=ignore_index,
                     ls=float(label_smoothing), count=count[0] if reduction == "mean" else 1, stats=count)
        _defer_class_check("cross_entropy", input, target, ignore_index, count[1])
        return loss
    return apply(CrossEntropy, input, target, reduction=reduction, ignore=ignore_index, ls=float(label_smoothing),
                 count=_mean_divisor(reduction, count))


def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean"):
    """Negative log-likelihood of (N, C) log-probabilities against integer class indices (N,), as
    PyTorch's (same signature; the deprecated ``size_average``/``reduce`` raise NotImplementedError).

    ``nll_loss(log_softmax(x, 1), t)`` equals ``cross_entropy(x, t)``. With class weights
    ``weight`` (C,), ``'mean'`` divides by the summed weights of the counted rows, as torch.
    """
    _legacy_reduction("nll_loss", size_average, reduce)
    _check_reduction(reduction)
    if weight is not None:
        target = _class_target("nll_loss", input, target, ignore_index)[0]
        return _weighted_class_loss("nll_loss", input, target, weight, reduction, ignore_index)
    target, count = _class_target("nll_loss", input, target, ignore_index)
    return apply(NLLLoss, input, target, reduction=reduction, ignore=ignore_index,
                 count=_mean_divisor(reduction, count))


__all__ = ["relu", "leaky_relu", "gelu", "sigmoid", "tanh", "softplus", "softmax", "log_softmax", "linear", "dropout",
           "dropout1d", "dropout2d", "conv_transpose2d",
           "layer_norm", "batch_norm", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "silu", "mish",
           "elu", "hardtanh",
           "one_hot"]


# --- convolution, group and instance normalisation, adaptive pooling, KL divergence ---------------



def _not_one(what, **args):
    for name, v in args.items():
        if v != 1 and v != (1,):
            raise NotImplementedError(f"{what}: {name}={v!r} is not supported (only {name}=1)")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """Cross-correlation of (N, C, L) (or unbatched (C, L)) input with (O, C, k) weights, as
    ``torch.nn.functional.conv1d``; ``padding`` is an int, ``'valid'`` or ``'same'``. ``dilation``
    and ``groups`` other than 1 raise NotImplementedError."""
    _not_one("conv1d", dilation=dilation, groups=groups)
    if isinstance(input, Tensor) and input.ndim == 2 and weight.ndim == 3:
        return _conv1d(ops.expand_dims(input, 0), weight, bias, stride, padding)[0]
    return _conv1d(input, weight, bias, stride, padding)


def _norm_params(name, x, c, **tensors):
    for k, t in tensors.items():
        if t is not None and t.shape != (c,):
            raise ValueError(f"{name}: {k} has shape {t.shape}, expected ({c},) for input {x.shape}")


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5):  # noqa: A002
    """Group normalisation of (N, C, ...) input, as ``torch.nn.functional.group_norm``: each
    sample's channels split into ``num_groups`` groups, each normalised over its channels and
    positions (biased variance), then scaled by ``weight`` and shifted by ``bias`` (shape (C,)).
    One op (:class:`~backprop_gpu.ops.normalization.GroupNorm`)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"group_norm: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"group_norm needs (N, C, ...) input, got shape {input.shape}")
    c = input.shape[1]
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: the {c} channels of input {input.shape} are not divisible into "
                         f"num_groups={num_groups!r} groups")
    _norm_params("group_norm", input, c, weight=weight, bias=bias)
    return _group_norm(input, int(num_groups), weight, bias, eps)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,  # noqa: A002
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5):
    """Instance normalisation of (N, C, ...) input, as ``torch.nn.functional.instance_norm``.

    With ``use_input_stats`` each (sample, channel) is normalised over its positions (biased
    variance; group normalisation with one channel per group), and running statistics, if
    given, are updated in place with ``momentum`` from the mean over the batch of each
    instance's mean and *unbiased* variance, as torch. Otherwise the running statistics
    normalise, as batch normalisation in evaluation."""
    if not isinstance(input, Tensor):
        raise TypeError(f"instance_norm: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 3:
        raise ValueError(f"instance_norm needs (N, C, ...) input with spatial axes, got shape {input.shape}")
    c = input.shape[1]
    _norm_params("instance_norm", input, c, running_mean=running_mean, running_var=running_var, weight=weight,
                 bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: give both running_mean and running_var, or neither")
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("instance_norm: use_input_stats=False needs running_mean and running_var")
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    m = input.numel() // (input.shape[0] * c) if input.shape[0] * c else 0
    if m < 2:
        raise ValueError(f"instance_norm: expected more than 1 spatial element when training, got input "
                         f"{input.shape}")
    if running_mean is not None:
        for name, t in (("running_mean", running_mean), ("running_var", running_var)):
            if t.device != input.device:  # before the running statistics change
                raise ops.DeviceMismatchError(f"instance_norm: input {input.shape} is on {input.device} but "
                                              f"{name} is on {t.device}")
        rows = input.array.reshape(input.shape[0], c, m)
        mu = rows.mean(axis=2)
        var = ((rows - mu[:, :, None]) ** 2).sum(axis=2) / (m - 1)
        for t, batch in ((running_mean, mu), (running_var, var)):
            t.array *= 1 - momentum
            t.array += (momentum * batch.mean(axis=0)).astype(t.dtype, copy=False)
            t._version[0] += 1
    return _group_norm(input, c, weight, bias, eps)


def adaptive_avg_pool1d(input, output_size):  # noqa: A002
    """Mean over PyTorch's adaptive windows of (N, C, L) or (C, L) input, to length ``output_size``."""
    return _adaptive_avg_pool1d(input, output_size)


def adaptive_avg_pool2d(input, output_size):  # noqa: A002
    """Mean over PyTorch's adaptive windows (output cell i of an axis of size n covers
    ``floor(i n / out) .. ceil((i + 1) n / out) - 1``) of (N, C, H, W) or (C, H, W) input;
    ``output_size`` is an int or an (H, W) pair whose ``None`` entries keep the input's size."""
    return _adaptive_avg_pool2d(input, output_size)


def _no_indices(what, return_indices):
    if return_indices:
        raise NotImplementedError(f"{what}: return_indices=True is not supported")


def adaptive_max_pool1d(input, output_size, return_indices: bool = False):  # noqa: A002
    """Max over PyTorch's adaptive windows of (N, C, L) or (C, L) input; each window's first
    maximum takes the gradient. ``return_indices=True`` raises NotImplementedError."""
    _no_indices("adaptive_max_pool1d", return_indices)
    return _adaptive_max_pool1d(input, output_size)


def adaptive_max_pool2d(input, output_size, return_indices: bool = False):  # noqa: A002
    """Max over PyTorch's adaptive windows of (N, C, H, W) or (C, H, W) input; each window's first
    maximum (row-major) takes the gradient, as torch. ``return_indices=True`` raises
    NotImplementedError."""
    _no_indices("adaptive_max_pool2d", return_indices)
    return _adaptive_max_pool2d(input, output_size)


_KL_REDUCTIONS = ("mean", "batchmean", "sum", "none")


def kl_div(input, target, size_average=None, reduce=None, reduction: str = "mean",  # noqa: A002
           log_target: bool = False):
    """The pointwise KL divergence ``target (log target - input)`` of log-probabilities ``input``
    (0 where ``target`` is 0), or ``exp(target) (target - input)`` with ``log_target``, as
    ``torch.nn.functional.kl_div``. ``'batchmean'`` divides the sum by the batch size (the KL
    divergence proper); ``'mean'`` divides by the number of elements and warns, as torch."""
    for name, v in (("size_average", size_average), ("reduce", reduce)):
        if v is not None:
            raise NotImplementedError(f"kl_div: the deprecated argument {name}={v!r} is not supported; "
                                      f"use reduction=" + "|".join(repr(r) for r in _KL_REDUCTIONS))
    if reduction not in _KL_REDUCTIONS:
        raise ValueError(f"kl_div: reduction must be one of {_KL_REDUCTIONS}, got {reduction!r}")
    input, target = _autocast("kl_div", input, target)
    target = _float_pair("kl_div", input, target, "none")
    if log_target:
        loss = ops.exp(target) * (target - input)
    else:
        # log of 1 where the target is 0: the term is 0 there, and so is its gradient (torch's xlogy)
        loss = target * (ops.log(ops.where(target == 0, 1.0, target)) - input)
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      UserWarning, stacklevel=2)
        return loss.mean()
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.ndim else loss.sum()
    return _reduce(loss, reduction)


__all__ += ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "group_norm", "instance_norm", "adaptive_avg_pool1d",
            "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d", "kl_div"]


# --- class weights of cross_entropy and nll_loss ---------------------------------------------------

def _legacy_reduction(name, size_average, reduce):
    for arg, v in (("size_average", size_average), ("reduce", reduce)):
        if v is not None:
            raise NotImplementedError(f"{name}: the deprecated argument {arg}={v!r} is not supported; "
                                      f"use reduction='mean'|'sum'|'none'")


def _weighted_class_loss(name, logp, target, weight, reduction, ignore_index, label_smoothing=0.0):
    """Torch's class-weighted NLL of (N, C) log-probabilities ``logp`` (with label smoothing for
    cross-entropy): row i costs ``-weight[t_i] logp[i, t_i]`` (0 where ``t_i`` is ``ignore_index``)
    and ``'mean'`` divides the sum by the summed weights of the counted rows, on the device (no
    counted row: 0/0 = nan, as torch). With smoothing ``ls`` the loss is ``(1 - ls)`` times that
    plus ``ls / C`` times the same reduction of ``-sum_c weight[c] logp[i, c]``. ``target`` is
    the tensor :func:`_class_target` returned (checked)."""
    c = logp.shape[1]
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: weight must be a Tensor, got {type(weight).__name__}")
    if weight.shape != (c,):
        raise ValueError(f"{name}: weight tensor should be defined either for all {c} classes or no classes "
                         f"but got weight tensor of shape {weight.shape} (input {logp.shape})")
    if not is_floating(weight.dtype):
        raise TypeError(f"{name}: weight must be floating point, got dtype {weight.dtype}")
    if weight.device != logp.device:
        raise ops.DeviceMismatchError(f"{name}: input is on {logp.device} but weight is on {weight.device}")
    w = weight.detach()  # constant class weights: no gradient into them
    if w.dtype != logp.dtype:
        w = w.astype(logp.dtype)
    valid = target != ignore_index
    safe = ops.where(valid, target, 0)
    row_w = w[safe] * valid.astype(logp.dtype)  # each row's weight, 0 where ignored
    loss = -ops.gather(logp, 1, safe.reshape(-1, 1)).reshape(-1) * row_w
    smooth = None
    if label_smoothing:
        smooth = -(logp * w).sum(axis=1) * valid.astype(logp.dtype)
    if reduction == "none":
        return loss if smooth is None else (1 - label_smoothing) * loss + (label_smoothing / c) * smooth
    loss, smooth = loss.sum(), (None if smooth is None else smooth.sum())
    if reduction == "mean":
        total = row_w.sum()
        loss, smooth = loss / total, (None if smooth is None else smooth / total)
    return loss if smooth is None else (1 - label_smoothing) * loss + (label_smoothing / c) * smooth


# --- interpolate --------------------------------------------------------------------------------



def _per_axis(name, value, d, what):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * d
    if len(values) != d:
        raise ValueError(f"interpolate: {name} {value!r} must be a number or have one entry per spatial axis "
                         f"({d} for input {what})")
    return values


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,  # noqa: A002
                recompute_scale_factor=None, antialias: bool = False):
    """Resize (N, C, L), (N, C, H, W) or (N, C, D, H, W) input to ``size`` or by ``scale_factor``,
    as ``torch.nn.functional.interpolate`` in its ``'nearest'`` mode (torch's source indices,
    ``min(floor(i / scale_factor), n - 1)``; the output size is ``floor(n * scale_factor)``).
    Other modes raise NotImplementedError."""
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: input must be a Tensor, got {type(input).__name__}")
    if mode != "nearest":
        raise NotImplementedError(f"interpolate: mode={mode!r} is not supported (only 'nearest')")
    if align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if antialias:
        raise ValueError("Anti-alias option is restricted to bilinear and bicubic modes and requires a 4-D input")
    if input.ndim not in (3, 4, 5):
        raise ValueError(f"interpolate expects 3-, 4- or 5-d input (N, C, *spatial), got shape {input.shape}")
    d = input.ndim - 2
    spatial = input.shape[2:]
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size or scale_factor")
    if size is not None:
        out = tuple(int(s) for s in _per_axis("size", size, d, input.shape))
        scales = None
    else:
        factors = tuple(float(f) for f in _per_axis("scale_factor", scale_factor, d, input.shape))
        out = tuple(int(np.floor(n * f)) for n, f in zip(spatial, factors))
        # torch steps by 1 / scale_factor unless told to recompute it from the sizes
        scales = None if recompute_scale_factor else tuple(1.0 / f for f in factors)
    if any(s < 1 for s in out):
        raise ValueError(f"interpolate: the output size {out} of input {input.shape} must be positive")
    return _upsample_nearest(input, out, scales)


__all__ += ["interpolate"]


def _attention_mask(what, mask, scores):
    """``mask`` as something to add to ``scores``, or a boolean to keep: ('add', m) or ('keep', m)."""
    if not isinstance(mask, Tensor):
        mask = constant_like(mask, scores)
    if mask.dtype.kind == "b":
        return "keep", mask
    if mask.dtype.kind != "f":
        raise TypeError(f"{what}: attn_mask must be a bool or floating tensor, got dtype {mask.dtype}")
    return "add", mask


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale=None, enable_gqa: bool = False):
    """``softmax(query @ key^T * scale + mask) @ value`` over the last two dimensions, as
    ``torch.nn.functional.scaled_dot_product_attention``.

    query (..., L, E), key (..., S, E), value (..., S, Ev); leading dimensions broadcast.
    ``scale`` defaults to 1/sqrt(E). A boolean ``attn_mask`` (broadcastable to (..., L, S)) marks
    with True the positions that take part; a floating one is added to the scores. ``is_causal``
    uses the lower-triangular (L, S) mask and cannot be combined with ``attn_mask``. Dropout with
    probability ``dropout_p`` is applied to the attention weights whenever ``dropout_p > 0`` (as
    torch's; pass 0 in eval mode). ``enable_gqa=True`` raises NotImplementedError.
    """
    what = "scaled_dot_product_attention"
    if enable_gqa:
        raise NotImplementedError(f"{what}: enable_gqa=True (grouped-query attention) is not supported")
    _check_p(dropout_p)
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{what}: {name} must have at least 2 dimensions (..., seq, features), got shape "
                             f"{t.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{what}: query {query.shape}, key {key.shape} and value {value.shape} do not fit: "
                         "expected query (..., L, E), key (..., S, E), value (..., S, Ev)")
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / float(np.sqrt(query.shape[-1])) if scale is None else float(scale)
    scores = ops.matmul(query * scale, ops.swapaxes(key, -1, -2))
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError(f"{what}: Explicit attn_mask should not be set when is_causal=True")
        attn_mask = ops.tril(ops.ones(L, S, dtype="bool", device=query.backend))  # made on the device
    if attn_mask is not None:
        kind, mask = _attention_mask(what, attn_mask, scores)
        try:
            np.broadcast_shapes(tuple(mask.shape), tuple(scores.shape))
        except ValueError:
            raise ValueError(f"{what}: attn_mask of shape {mask.shape} does not broadcast to the attention "
                             f"scores' shape {scores.shape} (..., L={L}, S={S})") from None
        scores = ops.where(mask, scores, -np.inf) if kind == "keep" else scores + mask
    attn = ops.softmax(scores, dim=-1)
    if dropout_p > 0:
        attn = dropout(attn, dropout_p, True)
    return ops.matmul(attn, value)


__all__ += ["scaled_dot_product_attention"]
