"""2-D convolution and pooling (NCHW) on two primitives, im2col and col2im.

``im2col`` gathers every kernel window of the padded input with one strided
view and one copy; ``col2im`` adds window gradients back with ``kh * kw``
slice additions into one padded array. Each is the other's VJP, so
convolution (im2col, then a matmul) and pooling (im2col, then a reduction)
get first- and higher-order gradients on every backend from ops checked on
their own.
"""
from __future__ import annotations

from .core import Op, apply
from .linalg import matmul


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _out_size(h, w, kh, kw, stride, padding, what):
    (sh, sw), (ph, pw) = stride, padding
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{what}: stride must be >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{what}: kernel {(kh, kw)} does not fit padded input of size {(h + 2 * ph, w + 2 * pw)}")
    return ho, wo


def _im2col(xp, x, kernel, stride, padding, fill):
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    s = x.strides
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(n, c, kh, kw, ho, wo), strides=(s[0], s[1], s[2], s[3], s[2] * sh, s[3] * sw))
    return windows.reshape(n, c, kh * kw, ho, wo)  # the one copy


def _col2im(xp, cols, shape, kernel, stride, padding):
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = cols.shape[3], cols.shape[4]
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[:, :, i, j]
    return out[:, :, ph:ph + h, pw:pw + w]


class Im2Col(Op):
    """(N, C, H, W) -> (N, C, kh*kw, Ho, Wo): every window of the padded input."""
    name = "im2col"
    saves_inputs = False
    forward = staticmethod(lambda xp, x, kernel, stride, padding, fill: _im2col(xp, x, kernel, stride, padding, fill))

    @staticmethod
    def vjp(F, g, out, x, kernel, stride, padding, fill):
        return (F.col2im(g, x.shape, kernel, stride, padding),)


class Col2Im(Op):
    """The adjoint of :class:`Im2Col`: window values summed back into (N, C, H, W)."""
    name = "col2im"
    saves_inputs = False
    forward = staticmethod(lambda xp, cols, shape, kernel, stride, padding: _col2im(xp, cols, shape, kernel, stride,
                                                                                     padding))

    @staticmethod
    def vjp(F, g, out, cols, shape, kernel, stride, padding):
        return (F.im2col(g, kernel, stride, padding),)


def im2col(x, kernel, stride, padding, fill=0.0):
    """Every (kh, kw) window of ``x`` padded by ``padding`` with ``fill``, as (N, C, kh*kw, Ho, Wo)."""
    return apply(Im2Col, x, kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding), fill=fill)


def col2im(cols, shape, kernel, stride, padding):
    """Sum windows (N, C, kh*kw, Ho, Wo) back into an (N, C, H, W) tensor of ``shape``."""
    return apply(Col2Im, cols, shape=tuple(shape), kernel=tuple(kernel), stride=tuple(stride),
                 padding=tuple(padding))


def _windows(x, kernel, stride, padding, what, fill=0.0):
    if x.ndim != 4:
        raise ValueError(f"{what} expects input of shape (N, C, H, W), got {x.shape}")
    ho, wo = _out_size(x.shape[2], x.shape[3], *kernel, stride, padding, what)
    return im2col(x, kernel, stride, padding, fill), ho, wo


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of (N, C, H, W) input with (O, C, kh, kw) weights, as ``torch.nn.functional.conv2d``."""
    if weight.ndim != 4 or x.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: input {x.shape} and weight {weight.shape} do not fit "
                         "(expected (N, C, H, W) and (O, C, kh, kw))")
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    cols, ho, wo = _windows(x, (kh, kw), _pair(stride, "stride"), _pair(padding, "padding"), "conv2d")
    # (N, C, kh*kw, Ho, Wo) -> (N, C*kh*kw, Ho*Wo); the weight flattens in the same (C, kh, kw) order
    out = matmul(weight.reshape(o, c * kh * kw), cols.reshape(n, c * kh * kw, ho * wo)).reshape(n, o, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


class MaxOverWindow(Op):
    """Max over axis 2 of (N, C, K, Ho, Wo) windows; the gradient goes to the first maximum, as in PyTorch."""
    name = "max_pool"
    differentiable = True

    @staticmethod
    def forward(xp, cols):
        return cols.max(axis=2)

    @staticmethod
    def vjp(F, g, out, cols):
        k = cols.shape[2]
        first = F.one_hot(F.argmax(cols, axis=2), k, g.dtype)  # (N, C, Ho, Wo, K)
        return (F.transpose(first, (0, 1, 4, 2, 3)) * F.expand_dims(g, 2),)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window (padding with -inf, as PyTorch); the first maximum takes the gradient."""
    kernel = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    cols, _, _ = _windows(x, kernel, st, _pair(padding, "padding"), "max_pool2d", fill=float("-inf"))
    return apply(MaxOverWindow, cols)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding counts, as PyTorch's default ``count_include_pad``)."""
    kernel = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    cols, _, _ = _windows(x, kernel, st, _pair(padding, "padding"), "avg_pool2d")
    return cols.mean(axis=2)
