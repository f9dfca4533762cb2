"""2-D convolution and pooling (NCHW), composed from differentiable primitives.

im2col is a stack of ``kh * kw`` strided slices of the padded input, so the
gradient (a scatter of each slice back), the higher-order gradients and every
backend come for free from ops already checked on their own.
"""
from __future__ import annotations

from .joining import pad, stack
from .linalg import matmul


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _patches(x, kh, kw, stride, padding, what):
    """(N, C, kh*kw, Ho, Wo): every kernel offset's strided view of the padded input."""
    if x.ndim != 4:
        raise ValueError(f"{what} expects input of shape (N, C, H, W), got {x.shape}")
    (sh, sw), (ph, pw) = stride, padding
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{what}: stride must be >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    if ph or pw:
        x = pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    H, W = x.shape[2], x.shape[3]
    ho, wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{what}: kernel {(kh, kw)} does not fit padded input of size {(H, W)}")
    views = [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]
    return stack(views, axis=2), ho, wo


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of (N, C, H, W) input with (O, C, kh, kw) weights, as ``torch.nn.functional.conv2d``."""
    if weight.ndim != 4 or x.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: input {x.shape} and weight {weight.shape} do not fit "
                         "(expected (N, C, H, W) and (O, C, kh, kw))")
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    cols, ho, wo = _patches(x, kh, kw, _pair(stride, "stride"), _pair(padding, "padding"), "conv2d")
    # (N, C, kh*kw, Ho, Wo) -> (N, C*kh*kw, Ho*Wo); the weight flattens in the same (C, kh, kw) order
    cols = cols.reshape(n, c * kh * kw, ho * wo)
    out = matmul(weight.reshape(o, c * kh * kw), cols).reshape(n, o, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window; tied maxima share the gradient. Padding is with -inf, as in PyTorch."""
    kh, kw = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    pd = _pair(padding, "padding")
    if pd != (0, 0):
        x = pad(x, ((0, 0), (0, 0), (pd[0], pd[0]), (pd[1], pd[1])), value=float("-inf"))
    cols, _, _ = _patches(x, kh, kw, st, (0, 0), "max_pool2d")
    return cols.max(axis=2)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding counts, as PyTorch's default ``count_include_pad``)."""
    kh, kw = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    cols, _, _ = _patches(x, kh, kw, st, _pair(padding, "padding"), "avg_pool2d")
    return cols.mean(axis=2)
