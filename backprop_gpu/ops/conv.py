"""2-D convolution and pooling (NCHW) on two primitives, im2col and col2im (1-D convolution is
the height-1 case).

``im2col`` gathers every kernel window of the padded input with one strided
view and one copy; ``col2im`` adds window gradients back with ``kh * kw``
slice additions into one padded array. Each is the other's VJP, so
convolution (im2col, then a matmul) and pooling (im2col, then a reduction)
get first- and higher-order gradients on every backend from ops checked on
their own.
"""
from __future__ import annotations

from ..tape.op import Op, apply
from ..tape.mode import state
from .joining import pad as pad_op
from .linalg import mm


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


class Im2Col(Op):
    """(N, C, H, W) -> (N, C, kh*kw, Ho, Wo): every window of the padded input."""
    name = "im2col"
    saves = ()
    forward = staticmethod(lambda F, x, kernel, stride, padding, fill: F.im2col(x, kernel, stride, padding, fill))

    @staticmethod
    def vjp(F, g, out, x, kernel, stride, padding, fill):
        return (F.col2im(g, x.shape, kernel, stride, padding),)


class Col2Im(Op):
    """The adjoint of :class:`Im2Col`: window values summed back into (N, C, H, W)."""
    name = "col2im"
    saves = ()
    forward = staticmethod(lambda F, cols, shape, kernel, stride, padding: F.col2im(cols, shape, kernel, stride,
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


class ConvCols(Op):
    """The convolution proper, on im2col's windows: (N, C, kh*kw, Ho, Wo) columns times the
    (O, C, kh, kw) weight flattened in the same (C, kh, kw) order, plus the bias in place:
    one batched matrix product per op, no reshape or add nodes."""
    name = "conv2d"
    saves = ("cols", "w")

    @staticmethod
    def forward(F, cols, w, *b):
        n, c, k, ho, wo = cols.shape
        o = w.shape[0]
        out = mm(F, w.reshape(o, c * k), cols.reshape(n, c * k, ho * wo))
        if b:
            out += b[0].reshape(o, 1)
        return out.reshape(n, o, ho, wo)

    @staticmethod
    def vjp(F, g, out, cols, w, *b, needs):
        n, c, k, ho, wo = cols.shape
        o = w.shape[0]
        g3 = F.reshape(g, (n, o, ho * wo))
        gcols = gw = gb = None
        if needs[0]:
            gcols = F.reshape(mm(F, F.swapaxes(F.reshape(w, (o, c * k)), 0, 1), g3), cols.shape)
        if needs[1]:
            cols3 = F.reshape(cols, (n, c * k, ho * wo))
            gw = F.reshape(F.sum(mm(F, g3, F.swapaxes(cols3, 1, 2)), axis=0), w.shape)
        if b and needs[2]:
            gb = F.sum(g3, axis=(0, 2))
        return (gcols, gw) + ((gb,) if b else ())


def _check_conv(what, x, weight, bias, nd, expected):
    """``nd``-D input, weight and bias shapes that fit a convolution (``expected`` names the layouts)."""
    if weight.ndim != nd or x.ndim != nd or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{what}: input {x.shape} and weight {weight.shape} do not fit (expected {expected})")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"{what}: bias of shape {bias.shape} does not fit weight {weight.shape} "
                         f"(expected ({weight.shape[0]},))")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of (N, C, H, W) input with (O, C, kh, kw) weights, as ``torch.nn.functional.conv2d``."""
    _check_conv("conv2d", x, weight, bias, 4, "(N, C, H, W) and (O, C, kh, kw)")
    if state.cast is not None:  # autocast casts here, so that im2col's columns are made in the low dtype
        x, weight, bias = state.cast("conv2d", (x, weight, bias))
    kh, kw = weight.shape[2:]
    cols, _, _ = _windows(x, (kh, kw), _pair(stride, "stride"), _pair(padding, "padding"), "conv2d")
    return apply(ConvCols, cols, weight, *(() if bias is None else (bias,)))


class MaxPool2d(Op):
    """Max over each window, read straight from strided views of the input (no window copy);
    the gradient goes to each window's first maximum, as in PyTorch."""
    name = "max_pool2d"
    saves = ("x", "out")
    forward = staticmethod(lambda F, x, kernel, stride, padding: F.max_pool2d(x, kernel, stride, padding))

    @staticmethod
    def vjp(F, g, out, x, kernel, stride, padding):
        return (F.max_pool2d_backward(g, x, out, kernel, stride, padding),)


class MaxPoolScatter(Op):
    """Recorded ``F.max_pool2d_backward`` (for ``create_graph``): linear in ``g``, piecewise
    constant in ``x`` and ``out``, which pick the maxima."""
    name = "max_pool2d_backward"
    saves = ("x", "out")
    forward = staticmethod(lambda F, g, x, out, kernel, stride, padding:
                           F.max_pool2d_backward(g, x, out, kernel, stride, padding))

    @staticmethod
    def vjp(F, gg, res, g, x, out, kernel, stride, padding):
        return F.max_pool2d_gather(gg, x, out, kernel, stride, padding), None, None


class MaxPoolGather(Op):
    """Recorded ``F.max_pool2d_gather``, the adjoint of :class:`MaxPoolScatter`."""
    name = "max_pool2d_gather"
    saves = ("x", "out")
    forward = staticmethod(lambda F, gx, x, out, kernel, stride, padding:
                           F.max_pool2d_gather(gx, x, out, kernel, stride, padding))

    @staticmethod
    def vjp(F, gg, res, gx, x, out, kernel, stride, padding):
        return F.max_pool2d_backward(gg, x, out, kernel, stride, padding), None, None


def max_pool2d_backward(g, x, out, kernel, stride, padding):
    """``g`` sent to each window's first maximum of ``x`` (recorded; see :class:`MaxPoolScatter`)."""
    return apply(MaxPoolScatter, g, x, out, kernel=kernel, stride=stride, padding=padding)


def max_pool2d_gather(gx, x, out, kernel, stride, padding):
    """Each window's ``gx`` at its first maximum of ``x`` (recorded; see :class:`MaxPoolGather`)."""
    return apply(MaxPoolGather, gx, x, out, kernel=kernel, stride=stride, padding=padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window (padding with -inf, as PyTorch); the first maximum takes the gradient."""
    kernel = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    pad = _pair(padding, "padding")
    if x.ndim != 4:
        raise ValueError(f"max_pool2d expects input of shape (N, C, H, W), got {x.shape}")
    _out_size(x.shape[2], x.shape[3], *kernel, st, pad, "max_pool2d")
    if 2 * pad[0] > kernel[0] or 2 * pad[1] > kernel[1]:
        raise ValueError(f"max_pool2d: padding {pad} must be at most half the kernel size {kernel}")
    return apply(MaxPool2d, x, kernel=kernel, stride=st, padding=pad)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding counts, as PyTorch's default ``count_include_pad``)."""
    kernel = _pair(kernel_size, "kernel_size")
    st = _pair(stride if stride is not None else kernel_size, "stride")
    cols, _, _ = _windows(x, kernel, st, _pair(padding, "padding"), "avg_pool2d")
    return cols.mean(axis=2)


def _single(v, name):
    if isinstance(v, int):
        return v
    v = tuple(v)
    if len(v) != 1:
        raise ValueError(f"{name} must be an int or a 1-tuple, got {v!r}")
    return int(v[0])


def conv1d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of (N, C, L) input with (O, C, k) weights, as ``torch.nn.functional.conv1d``;
    ``padding`` is an int or ``'valid'`` (0) or ``'same'`` (output length L, stride 1 only).

    It is :func:`conv2d` of the height-1 images (N, C, 1, L): the same op and kernels, and only
    reshape views around them."""
    _check_conv("conv1d", x, weight, bias, 3, "(N, C, L) and (O, C, k)")
    n, c, length = x.shape
    o, _, k = weight.shape
    st = _single(stride, "stride")
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"conv1d: padding must be an int, a 1-tuple, 'valid' or 'same', got {padding!r}")
        if padding == "same" and st != 1:
            raise ValueError(f"conv1d: padding='same' is not supported for strided convolutions (stride {st})")
        pad = 0
        if padding == "same" and k > 1:
            # torch's split of the k - 1 padded positions: the extra one of an even kernel on the right
            left = (k - 1) // 2
            if (k - 1) % 2 == 0:
                pad = left
            else:
                x = pad_op(x, ((0, 0), (0, 0), (left, k - 1 - left)))
                length = x.shape[2]
    else:
        pad = _single(padding, "padding")
    if st < 1 or pad < 0:
        raise ValueError(f"conv1d: stride must be >= 1 and padding >= 0, got stride {st}, padding {pad}")
    if length + 2 * pad < k:
        raise ValueError(f"conv1d: kernel size {k} does not fit padded input of length {length + 2 * pad}")
    y = conv2d(x.reshape(n, c, 1, length), weight.reshape(o, c, 1, k), bias, (1, st), (0, pad))
    return y.reshape(n, o, y.shape[3])
