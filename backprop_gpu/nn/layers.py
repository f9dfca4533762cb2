"""Layers: Linear, activations, Dropout, normalisation, Embedding, Flatten, convolution and pooling."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import ops
from ..array.devices import gpu_array_device
from ..ops.creation import empty, ones, zeros
from ..tape.mode import is_anomaly_enabled
from ..tape.tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), b of shape (out_features,).

    PyTorch's default init: ``kaiming_uniform_(W, a=sqrt(5))``, i.e. U(-1/sqrt(in), 1/sqrt(in)),
    and the same bound for b. The forward is one op (a matmul against the transposed view of
    W, bias added in place): no copy of W, no separate add node.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise weight and bias as ``torch.nn.Linear`` does (Kaiming-uniform, bias bound from fan-in)."""
        init.reset_layer_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def fused_with(self, following):
        if self._is_exactly(Linear) and following._is_exactly(ReLU):
            return _LinearReLU(self)
        return None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _LinearReLU:
    """A Linear layer and a ReLU as one op (:func:`~backprop_gpu.nn.functional.linear_relu`), which a
    Dropout after them joins: its mask drawn in the same pass."""

    def __init__(self, linear):
        self.linear = linear

    def __call__(self, x, dropout=0.0):
        return F.linear_relu(x, self.linear.weight, self.linear.bias, dropout)

    def fused_with(self, following):
        if following._is_exactly(Dropout):
            p = following.p if following.training else 0.0
            if p < 1:  # p == 1 gives x * 0 (NaN stays NaN): the Dropout's own op
                return lambda x: self(x, p)
        return None


class Identity(Module):
    """Returns its input."""

    def __init__(self, *args, **kwargs):  # accepts and ignores arguments, as PyTorch's
        super().__init__()

    def forward(self, x):
        return x


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    """Hyperbolic tangent."""

    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    """Logistic sigmoid 1 / (1 + e^-x)."""

    def forward(self, x):
        return ops.sigmoid(x)


class Softplus(Module):
    """log(1 + e^x)."""

    def forward(self, x):
        return ops.softplus(x)


class GELU(Module):
    """GELU, exact (x Phi(x)) by default; ``approximate='tanh'`` for the tanh form."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """``x * sigmoid(x)``."""

    def forward(self, x):
        return F.silu(x)


class Mish(Module):
    """``x * tanh(softplus(x))``."""

    def forward(self, x):
        return F.mish(x)


class ELU(Module):
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Hardtanh(Module):
    """``x`` clamped to ``[min_val, max_val]``."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val ({min_val}) must not exceed max_val ({max_val})")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class LeakyReLU(Module):
    """x for x > 0, else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return ops.softmax(x, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Flatten(Module):
    """Flatten axes ``start_dim..end_dim`` (from 1 by default, keeping the batch axis)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout in training mode (zero with probability ``p``, scale the rest by
    1/(1-p)), the mask drawn from the input's backend generator; the identity in eval mode.
    ``inplace`` is accepted for torch's signature; the result is always a new tensor."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        F._check_p(p)
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes (biased variance);
    weight ones and bias zeros when ``elementwise_affine``."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = ((int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
                                 else tuple(int(s) for s in normalized_shape))
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, device=device, dtype=dtype))
            self.bias = Parameter(zeros(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class BatchNorm1d(Module):
    """Batch normalisation of (N, C) or (N, C, L) inputs, as ``torch.nn.BatchNorm1d``.

    Training: normalise with the batch mean and biased variance, and update the running
    statistics in place, ``running = (1 - momentum) * running + momentum * batch`` with the
    *unbiased* batch variance. Eval: normalise with the running statistics. The running
    statistics are buffers (in ``state_dict``, not ``parameters()``).
    """

    _expected_ndim = (2, 3)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None):
        super().__init__()
        if momentum is not None and (not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1):
            raise ValueError(f"{type(self).__name__} momentum must be a number in [0, 1] or None (a cumulative "
                             f"average), got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features, device=device, dtype=dtype))
            self.bias = Parameter(zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", zeros((), device=device, dtype="int64"))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Running mean to 0, running variance to 1, batch count to 0."""
        if self.running_mean is not None:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.zero_()

    def forward(self, x):
        return self._normalize(x, F.batch_norm)

    def fused_with(self, following):
        if type(self) in (BatchNorm1d, BatchNorm2d) and following._is_exactly(ReLU):
            return lambda x: self._normalize(x, F.batch_norm_relu)
        return None

    def _normalize(self, x, fn):
        if x.ndim not in self._expected_ndim or x.shape[1] != self.num_features:
            dims = " or ".join(f"{n}-d" for n in self._expected_ndim)
            raise ValueError(f"{type(self).__name__}({self.num_features}) got input of shape {x.shape}; "
                             f"expected {dims} input with {self.num_features} channels on axis 1")
        use_batch = self.training or self.running_mean is None
        momentum = self.momentum
        if self.training and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # the cumulative moving average, as torch
                nbt = self.num_batches_tracked
                if nbt.backend.is_host:
                    momentum = 1.0 / int(nbt.item())
                else:  # 1 / count on the device, a 0-d array: reading the count back would be a sync
                    momentum = nbt.backend.xp.true_divide(1.0, nbt.array, dtype=self.running_mean.dtype)
        return fn(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                  0.0 if momentum is None else momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of (N, C, H, W) inputs over N, H and W."""

    _expected_ndim = (4,)


class Embedding(Module):
    """A lookup table: integer indices of any shape → rows of ``weight`` (num_embeddings,
    embedding_dim), N(0, 1) init. The backward scatter-adds into ``weight`` (repeats add up).
    With ``padding_idx`` that row starts at zero and gets no gradient, as in PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, device=None,
                 dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding padding_idx {padding_idx} must be within num_embeddings "
                                 f"({self.num_embeddings})")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.array[padding_idx] = 0

    def forward(self, idx):
        """Rows of ``weight`` for integer ``idx``. Out-of-range indices raise IndexError: at once for
        host indices (NumPy data, CPU tensors; checked before they are copied to a GPU) and under
        anomaly detection; for indices already on a GPU, at the next synchronisation (the check
        runs there, deferred: see :class:`~backprop_gpu.array.modules.CupyArrays`)."""
        b = self.weight.backend
        host = None
        if not isinstance(idx, Tensor) and gpu_array_device(idx) is not None:
            idx = Tensor(idx, device=b)  # a raw CuPy array: checked on the device, like a GPU tensor
        if not isinstance(idx, Tensor):
            host = np.asarray(idx)
        elif idx.backend.is_host or is_anomaly_enabled():
            host = idx.numpy() if idx.numel() else None
        dtype = idx.dtype if host is None or isinstance(idx, Tensor) else host.dtype
        if dtype.kind not in "iu":
            raise TypeError(f"Embedding takes integer indices, got dtype {dtype}")
        if host is not None:
            self._check(host)
            if not isinstance(idx, Tensor):
                idx = Tensor(host, device=b)
        elif idx.numel():
            arrays, t = idx.backend.arrays, idx
            with arrays.cuda_device:
                bad = (idx.array.astype(np.uint64) >= self.num_embeddings).any()  # negatives are huge as uint64
            arrays.defer_check(bad, lambda: self._check(t.numpy()))
        rows = self.weight[idx]
        if self.padding_idx is None:
            return rows
        # the padding row's value, but no gradient into it
        return ops.where(ops.expand_dims(idx != self.padding_idx, -1), rows, rows.detach())

    def _check(self, host):
        if host.size:
            lo, hi = host.min(), host.max()
            if lo < 0 or hi >= self.num_embeddings:
                raise IndexError(f"Embedding({self.num_embeddings}) got indices in [{lo}, {hi}]; "
                                 f"valid indices are 0..{self.num_embeddings - 1}")

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Conv2d(Module):
    """2-D convolution over (N, C, H, W) with PyTorch's default init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = Parameter(empty(out_channels, in_channels, kh, kw, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise weight and bias as ``torch.nn.Conv2d`` does."""
        init.reset_layer_(self.weight, self.bias)

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


__all__ = ["Linear", "ReLU", "Tanh", "Sigmoid", "Softplus", "Identity", "GELU", "LeakyReLU", "Softmax", "Flatten",
           "Dropout", "LayerNorm", "BatchNorm1d", "BatchNorm2d", "Embedding", "Conv2d", "MaxPool2d", "AvgPool2d"]


class LogSoftmax(Module):
    """``log(softmax(x))`` along ``dim``, computed stably, as ``torch.nn.LogSoftmax``.

    ``dim=None`` picks torch's legacy implicit dimension (0 for 0-, 1- and 3-d inputs, else 1)
    with the same warning."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = self.dim
        if dim is None:
            import warnings

            warnings.warn("Implicit dimension choice for log_softmax has been deprecated. "
                          "Change the call to include dim=X as an argument.", UserWarning, stacklevel=2)
            dim = 0 if x.ndim in (0, 1, 3) else 1
        return F.log_softmax(x, dim=dim)

    def extra_repr(self):
        return f"dim={self.dim}"


__all__ += ["LogSoftmax"]


class Conv1d(Module):
    """1-D convolution over (N, C, L), as ``torch.nn.Conv1d`` (same signature and default init:
    ``kaiming_uniform_(a=sqrt(5))`` for the (O, C, k) weight, U(-1/sqrt(C k), 1/sqrt(C k)) for the
    bias). ``padding`` is an int, ``'valid'`` or ``'same'``; ``dilation``, ``groups`` other than 1
    and a ``padding_mode`` other than ``'zeros'`` raise NotImplementedError."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        F._not_one("Conv1d", dilation=dilation, groups=groups)
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv1d: padding_mode={padding_mode!r} is not supported (only 'zeros')")
        (k,) = (kernel_size,) if isinstance(kernel_size, numbers.Integral) else tuple(kernel_size)
        if isinstance(padding, str) and padding not in ("valid", "same"):
            raise ValueError(f"Conv1d: padding must be an int, 'valid' or 'same', got {padding!r}")
        if padding == "same" and stride not in (1, (1,)):
            raise ValueError(f"Conv1d: padding='same' is not supported for strided convolutions (stride {stride})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = (int(k),)
        self.stride = (stride,) if isinstance(stride, numbers.Integral) else tuple(stride)
        self.padding = padding if isinstance(padding, str) else (
            (padding,) if isinstance(padding, numbers.Integral) else tuple(padding))
        self.dilation, self.groups, self.padding_mode = (1,), 1, padding_mode
        self.weight = Parameter(empty(out_channels, in_channels, k, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise weight and bias as ``torch.nn.Conv1d`` does."""
        init.reset_layer_(self.weight, self.bias)

    def forward(self, x):
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(f"Conv1d({self.in_channels}, {self.out_channels}) got input of shape {x.shape}; "
                             f"expected (N, {self.in_channels}, L) or ({self.in_channels}, L)")
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        return s + ("" if self.bias is not None else ", bias=False")


__all__ += ["Conv1d"]


class ConvTranspose2d(Module):
    """Transposed 2-D convolution over (N, C_in, H, W), as ``torch.nn.ConvTranspose2d`` (same signature,
    parameter shapes (C_in, C_out, kh, kw) and default init). ``groups``, ``dilation`` other than 1 and
    a ``padding_mode`` other than ``'zeros'`` raise NotImplementedError."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None):
        super().__init__()
        F._not_one("ConvTranspose2d", groups=groups, dilation=dilation if isinstance(dilation, int) else
                   (1 if tuple(dilation) == (1, 1) else dilation))
        if padding_mode != "zeros":
            raise NotImplementedError(f"ConvTranspose2d: padding_mode={padding_mode!r} is not supported")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), (kh, kw)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.weight = Parameter(empty(in_channels, out_channels, kh, kw, device=device, dtype=dtype))
        self.bias = Parameter(empty(out_channels, device=device, dtype=dtype)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise weight and bias as ``torch.nn.ConvTranspose2d`` does."""
        init.reset_layer_(self.weight, self.bias)  # fan_in from weight.shape[1:] (C_out k), as torch

    def forward(self, x, output_size=None):
        if output_size is not None:
            raise NotImplementedError("ConvTranspose2d.forward(output_size=...): pass output_padding instead")
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}")


class Unflatten(Module):
    """Expand dimension ``dim`` into ``unflattened_size``, as ``torch.nn.Unflatten``."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = int(dim), tuple(unflattened_size)

    def forward(self, x):
        return x.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Dropout1d(Dropout):
    """Zero whole channels of (N, C, L) input with probability ``p`` in training mode."""

    def forward(self, x):
        return F.dropout1d(x, self.p, self.training)


class Dropout2d(Dropout):
    """Zero whole channels of (N, C, H, W) input with probability ``p`` in training mode."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)


__all__ += ["ConvTranspose2d", "Unflatten", "Dropout1d", "Dropout2d"]
