"""The reference fused kernels of the hot ops, written once over ``xp``.

:class:`Kernels` is mixed into the array namespace (``backend.F``). A backend
may override any method with a compiled version of the same contract (the
``numba`` backend does, in :mod:`backprop_gpu.array.kernels.numba_cpu`); the
tests run every backend's kernels against these. Kernels work on raw arrays
and record nothing: the ops that call them (:class:`~backprop_gpu.ops.conv.MaxPool2d`,
:class:`~backprop_gpu.ops.normalization.BatchNormTrain`, ...) hold the VJPs, and
under ``create_graph`` :mod:`backprop_gpu.ops` runs these same statements over
its recorded ops wherever they use no in-place writes (``relu_backward``,
``relu_backward_colsum``; softmax's and LayerNorm's, which their ops run on the ops namespace
through the module functions they are stated in: :func:`softmax_grad`, :func:`layer_norm_grad`
and so on); the others have a recorded op of their own.

Names ending in ``_`` write in place.
"""
from __future__ import annotations

import math

import numpy as np


def _lowest(dtype):
    """The fill that never wins a maximum: -inf, or an integer type's minimum."""
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def pool_out_size(h, w, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def channel_axes(ndim):
    """The axes batch normalisation reduces over: all but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def cross_entropy_grad(F, g, x, t, ignore_index, label_smoothing, reduction, count):
    """:meth:`Kernels.cross_entropy_backward` over a namespace ``F``: the array namespace, or
    :mod:`backprop_gpu.ops` (which records it, for ``create_graph``)."""
    n, c = x.shape
    e = F.exp(x - F.amax(x, axis=1, keepdims=True))
    p = e / F.sum(e, axis=1, keepdims=True)
    valid = F.reshape(t != ignore_index, (n, 1))
    target = F.one_hot(F.where(t != ignore_index, t, 0), c, x.dtype)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / c
    if reduction == "none":
        scale = F.reshape(g, (n, 1))
    else:
        scale = g / count if reduction == "mean" else g
    return F.where(valid, (p - target) * scale, 0)


# -- GELU over a namespace ``F`` (the array namespace, or :mod:`backprop_gpu.ops`, which records
# them for ``create_graph``) -----------------------------------------------------------------------
GELU_APPROXIMATIONS = ("none", "tanh")
INV_SQRT2 = 1 / math.sqrt(2)
INV_SQRT2PI = 1 / math.sqrt(2 * math.pi)
TANH_C = math.sqrt(2 / math.pi)
TANH_K = 0.044715


def gelu(F, x, approximate="none"):
    """GELU of ``x``: x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 (``approximate='none'``), or PyTorch's
    tanh form x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (``'tanh'``). As PyTorch's, the exact
    form loses digits to 1 + erf in the negative tail; the compiled kernels take Phi from erfc,
    which does not (the kernel tests allow for the difference)."""
    if approximate == "tanh":
        return 0.5 * x * (1 + F.tanh(TANH_C * (x + TANH_K * x * x * x)))
    return x * (0.5 * (1 + F.erf(x * INV_SQRT2)))


def gelu_grad(F, g, x, approximate="none"):
    """The gradient in ``x`` of :func:`gelu` given the output's gradient ``g``: g (Phi(x) + x phi(x)),
    or for the tanh form g ((1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2) / 2)."""
    if approximate == "tanh":
        t = F.tanh(TANH_C * (x + TANH_K * x * x * x))
        dt = (1 - t * t) * TANH_C * (1 + 3 * TANH_K * x * x)
        return g * (0.5 * (1 + t) + 0.5 * x * dt)
    cdf = 0.5 * (1 + F.erf(x * INV_SQRT2))
    pdf = F.exp(-0.5 * x * x) * INV_SQRT2PI
    return g * (cdf + x * pdf)



def dropout_mask(keep, p, dtype):
    """``keep`` as ``dtype`` times 1 / (1 - p) (rounded to ``dtype`` first): the factor dropout
    multiplies by."""
    mask = keep.astype(dtype)
    mask *= 1 / (1 - p)
    return mask

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



# -- softmax and LayerNorm over a namespace ``F`` (the array namespace, or :mod:`backprop_gpu.ops`,
# which records them for ``create_graph``): the kernels below state them over the last axis, the
# ops run them over any axis --------------------------------------------------------------------

def softmax(F, x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along ``axis``."""
    e = F.exp(x - F.amax(x, axis=axis, keepdims=True))
    return e / F.sum(e, axis=axis, keepdims=True)


def softmax_grad(F, g, out, axis=-1):
    """The gradient of :func:`softmax` whose output is ``out``: out (g - sum(g out))."""
    return out * (g - F.sum(g * out, axis=axis, keepdims=True))


def log_softmax(F, x, axis=-1):
    """x - max - log(sum(exp(x - max))) along ``axis``."""
    s = x - F.amax(x, axis=axis, keepdims=True)
    return s - F.log(F.sum(F.exp(s), axis=axis, keepdims=True))


def log_softmax_grad(F, g, out, axis=-1):
    """The gradient of :func:`log_softmax` whose output is ``out``: g - exp(out) sum(g)."""
    return g - F.exp(out) * F.sum(g, axis=axis, keepdims=True)


def layer_norm_grad(F, g, x, mean, rstd, w, needs=(True, True, True)):
    """``(gx, gw, gb)`` of LayerNorm over the rows of (rows, cols) ``x``, None where ``needs``
    says no; ``mean`` and ``rstd`` (rows, 1), ``w`` (cols,) or None. With xhat = (x - mean) rstd
    and gy = g w: gx = rstd (gy - mean(gy) - xhat mean(gy xhat)) per row, gw = sum(g xhat) and
    gb = sum(g) per column."""
    xhat = (x - mean) * rstd
    gx = gw = gb = None
    if needs[0]:
        gy = g if w is None else g * w
        gx = rstd * (gy - F.mean(gy, axis=1, keepdims=True) - xhat * F.mean(gy * xhat, axis=1, keepdims=True))
    if needs[1]:
        gw = F.sum(g * xhat, axis=0)
    if needs[2]:
        gb = F.sum(g, axis=0)
    return gx, gw, gb


def stats_dtype(dtype):
    """The dtype LayerNorm's row statistics are kept in: float32 for float32 and narrower floats
    (float16, bfloat16: PyTorch's accumulation type), float64 for float64."""
    return np.promote_types(dtype, np.float32)


class Kernels:
    """Reference kernels; needs ``self._xp``."""

    # -- ReLU -------------------------------------------------------------------------
    def bias_relu_(self, y, b):
        """``y = max(y + b, 0)`` in place (``b`` broadcast over the last axis, or None); returns ``y``."""
        if b is not None:
            y += b
        return self._xp.maximum(y, 0, out=y)

    def bias_relu_dropout_(self, y, b, p):
        """:meth:`dropout_` of :meth:`bias_relu_` ``(y, b)`` with probability ``p`` (in (0, 1)), in
        place, one pass where compiled: the same draws as ``dropout_``'s (stream, offset, count), and
        no mask kept, since the output alone gives the gradient, ``relu_backward(g, out, 1 / (1 - p))``:
        it is positive exactly where the ReLU passed and the mask kept."""
        self.bias_relu_(y, b)
        keep = self._xp.logical_not(self._backend.random_bernoulli(y.shape, p, y.dtype))
        y *= dropout_mask(keep, p, y.dtype)
        return y

    def relu_backward(self, g, out, scale=1.0):
        """The gradient through a ReLU whose output is ``out``: ``g`` where ``out > 0``, else 0, times
        ``scale`` (rounded to ``g``'s dtype; ``1 / (1 - p)`` after :meth:`bias_relu_dropout_`)."""
        # a mask multiply, not where(mask, g, 0): NumPy's where is ~12x slower on float32
        gm = g * (out > 0)
        return gm if scale == 1 else gm * scale

    def relu_backward_colsum(self, g, out, scale=1.0):
        """``(gm, gm summed over all axes but the last)`` with ``gm = relu_backward(g, out, scale)``:
        the gradients of a ReLU'd linear layer's product and of its bias."""
        gm = self.relu_backward(g, out, scale)
        return gm, gm.reshape((-1, gm.shape[-1])).sum(axis=0)

    def relu_backward_colsum_into(self, g, out, gb, scale=1.0):
        """:meth:`relu_backward_colsum` with the column sums written into ``gb`` (an array of their
        shape and dtype, a bias's empty gradient slot, say), which is returned in their place."""
        gm, cs = self.relu_backward_colsum(g, out, scale)
        gb[...] = cs
        return gm, gb

    # -- the LSTM cell --------------------------------------------------------------------------
    def lstm_cell_(self, a, c, out):
        """One LSTM step after its products: ``a`` (B, 4H) the gates' pre-activations in PyTorch's
        order (i, f, g, o; overwritten), ``c`` (B, H) the previous cell state; writes ``out`` (B, 6H)
        = [h | c' | i f g o] with the gates activated (sigmoid, tanh for g), ``c' = f c + i g`` and
        ``h = o tanh(c')``."""
        xp, H = self._xp, c.shape[-1]
        # one tanh over all four gates (sigmoid(x) = (tanh(x/2) + 1) / 2): no temporaries
        a[:, :2 * H] *= 0.5
        a[:, 3 * H:] *= 0.5
        act = out[:, 2 * H:]
        xp.tanh(a, out=act)
        for sig in (act[:, :2 * H], act[:, 3 * H:]):
            sig += 1
            sig *= 0.5
        c_new, h_new = out[:, H:2 * H], out[:, :H]
        xp.multiply(act[:, H:2 * H], c, out=c_new)
        c_new += act[:, :H] * act[:, 2 * H:3 * H]
        xp.tanh(c_new, out=h_new)
        h_new *= act[:, 3 * H:]
        return out

    def lstm_cell_backward(self, g, dh_rec, dc_rec, out, c_prev):
        """The gradient of one :meth:`lstm_cell_` step: ``g`` (B, 6H) the step's output gradient (its
        h and c columns, and those of the saved activations, zero but under create_graph),
        ``dh_rec``/``dc_rec`` (B, H) what the later step sends back (None at the last), ``out`` the
        step's output and ``c_prev`` the cell state before it. Returns ``(da, dc_prev)``: the
        pre-activations' gradient (B, 4H) and the previous cell state's share (``dh_prev`` is ``da @
        W_hh``, the caller's product)."""
        xp, H = self._xp, c_prev.shape[-1]
        dh = g[:, :H] if dh_rec is None else g[:, :H] + dh_rec
        dc = g[:, H:2 * H] if dc_rec is None else g[:, H:2 * H] + dc_rec
        i, f, gg, o = (out[:, (2 + k) * H:(3 + k) * H] for k in range(4))
        tc = xp.tanh(out[:, H:2 * H])
        dc = dc + dh * o * (1 - tc * tc)
        gi_, gf, gg_, go = (g[:, (2 + k) * H:(3 + k) * H] for k in range(4))
        da = xp.concatenate([(dc * gg + gi_) * i * (1 - i), (dc * c_prev + gf) * f * (1 - f),
                             (dc * i + gg_) * (1 - gg * gg), (dh * tc + go) * o * (1 - o)], axis=-1)
        return da, dc * f

    # -- the GRU cell ---------------------------------------------------------------------------
    def gru_cell_(self, x, gh, h, out):
        """One GRU step after its products: ``x`` (B, 3H) the input projection (r, z, n, PyTorch's
        order), ``gh`` (B, 3H) = h W_hh^T + b_hh, ``h`` (B, H) the previous state; writes ``out``
        (B, 5H) = [h' | r z n | gh_n] with r, z = sigmoid, n = tanh(x_n + r gh_n) and
        h' = n + z (h - n)."""
        xp, H = self._xp, h.shape[-1]
        r = 0.5 * (xp.tanh(0.5 * (x[:, :H] + gh[:, :H])) + 1)  # sigmoid's overflow-free form, as ops.sigmoid
        z = 0.5 * (xp.tanh(0.5 * (x[:, H:2 * H] + gh[:, H:2 * H])) + 1)
        n = xp.tanh(x[:, 2 * H:] + r * gh[:, 2 * H:])
        out[:, :H] = n + z * (h - n)
        out[:, H:2 * H], out[:, 2 * H:3 * H], out[:, 3 * H:4 * H], out[:, 4 * H:] = r, z, n, gh[:, 2 * H:]
        return out

    def gru_cell_backward(self, g, dh_rec, out, h_prev):
        """The gradient of one :meth:`gru_cell_` step: ``g`` (B, 5H) the step's output gradient (its h
        columns, and those of the saved r, z, n and gh_n, zero but under create_graph), ``dh_rec`` what
        the later step sends back (None at the last), ``out`` the step's output, ``h_prev`` the state
        before it. Returns ``(dgi, dgh, dh_direct)``: the input projection's and ``gh``'s gradients
        (B, 3H) and the previous state's direct share ``dh z`` (the caller adds ``dgh @ W_hh``)."""
        xp, H = self._xp, h_prev.shape[-1]
        dh = g[:, :H] if dh_rec is None else g[:, :H] + dh_rec
        r, z, n, ghn = (out[:, k * H:(k + 1) * H] for k in range(1, 5))
        gr, gz, gn, gghn = (g[:, k * H:(k + 1) * H] for k in range(1, 5))
        dan = (dh * (1 - z) + gn) * (1 - n * n)
        dar = (dan * ghn + gr) * r * (1 - r)
        daz = (dh * (h_prev - n) + gz) * z * (1 - z)
        return (xp.concatenate([dar, daz, dan], axis=-1), xp.concatenate([dar, daz, dan * r + gghn], axis=-1),
                dh * z)

    # -- GELU ---------------------------------------------------------------------------------
    def gelu_forward(self, x, approximate="none"):
        """:func:`gelu` of ``x`` (``approximate`` 'none' or 'tanh'), in ``x``'s dtype."""
        return gelu(self, x, approximate)

    def gelu_backward(self, g, x, approximate="none"):
        """:func:`gelu_grad`: the gradient in ``x`` given the output's gradient ``g``."""
        return gelu_grad(self, g, x, approximate)

    # -- dropout ------------------------------------------------------------------------------
    def dropout_(self, x, p, keep):
        """Inverted dropout of ``x`` with probability ``p`` (in (0, 1)): fills the bool ``keep``
        (``x``'s shape) with the complement of the backend generator's Bernoulli(p) mask in ``x``'s
        dtype (:meth:`~backprop_gpu.array.backend.Backend.random_bernoulli`, the same stream on
        every backend) and returns ``x * keep * s`` with ``s = 1 / (1 - p)`` rounded to ``x``'s dtype."""
        self._xp.logical_not(self._backend.random_bernoulli(x.shape, p, x.dtype), out=keep)
        return x * dropout_mask(keep, p, x.dtype)

    def dropout_backward(self, g, keep, p):
        """The gradient of :meth:`dropout_` given the output's gradient ``g``: ``g * keep * s``."""
        return g * dropout_mask(keep, p, g.dtype)

    # -- cross-entropy ------------------------------------------------------------------------
    def class_target_stats(self, t, num_classes, ignore_index, count, bad):
        """Fill the 0-d ``count`` with how many integer class indices ``t`` are not
        ``ignore_index`` (in ``count``'s dtype), and the 0-d bool ``bad`` with whether any of
        those lies outside [0, num_classes): the on-device check of a loss's targets."""
        counted = t != ignore_index
        count[...] = counted.sum(dtype=count.dtype)
        # a negative index is huge as uint64: one comparison checks both ends
        bad[...] = self._xp.logical_and(t.astype(np.uint64) >= num_classes, counted).any()

    def cross_entropy_forward(self, x, t, ignore_index, label_smoothing, reduction, count, stats=None):
        """Cross-entropy of (N, C) logits ``x`` against (N,) integer targets ``t``.

        Per row, with lse = logsumexp(x) and ls = ``label_smoothing``:
        (1 - ls) (lse - x[t]) + ls (lse - mean(x)), and 0 where ``t`` is ``ignore_index``; then
        ``reduction``: 'none' (the (N,) losses), 'sum', or 'mean' (the sum divided by ``count``, a
        number or a 0-d array; 0/0 is nan). ``stats``: None, or two 0-d arrays ``(counted, bad)``
        the kernel fills with the number of rows whose target is not ``ignore_index`` (in
        ``counted``'s dtype; ``count`` may be ``counted`` itself, filled first) and with whether any
        of their targets lies outside [0, C) (the on-device range check). Such a target reads
        class 0: its loss is meaningless, and ``bad`` says so.
        """
        xp = self._xp
        n, c = x.shape
        counted = t != ignore_index
        if stats is not None:
            self.class_target_stats(t, c, ignore_index, *stats)
        s = x - x.max(axis=1, keepdims=True)
        lse = xp.log(xp.exp(s).sum(axis=1))
        loss = lse - s[xp.arange(n), xp.where(counted & (t >= 0) & (t < c), t, 0)]
        if label_smoothing:
            loss = (1 - label_smoothing) * loss + label_smoothing * (lse - s.mean(axis=1))
        loss = xp.where(counted, loss, 0).astype(x.dtype, copy=False)
        if reduction == "none":
            return loss
        total = loss.sum()
        return (total / count).astype(x.dtype) if reduction == "mean" else total

    def cross_entropy_backward(self, g, x, t, ignore_index, label_smoothing, reduction, count):
        """The gradient in ``x`` of :meth:`cross_entropy_forward` given the output's gradient ``g``
        (0-d, or (N,) for 'none'): (softmax(x) - ((1 - ls) one_hot(t) + ls / C)) g / count per
        row ('mean'; g alone for 'sum', g[i] for 'none'), 0 where ``t`` is ``ignore_index``."""
        return cross_entropy_grad(self, g, x, t, ignore_index, label_smoothing, reduction, count)

    # -- windows ------------------------------------------------------------------------
    def im2col(self, x, kernel, stride, padding, fill=0.0):
        """Every (kh, kw) window of (N, C, H, W) ``x`` padded with ``fill``: (N, C, kh*kw, Ho, Wo)."""
        return _im2col(self._xp, x, kernel, stride, padding, fill)

    def col2im(self, cols, shape, kernel, stride, padding):
        """The adjoint of :meth:`im2col`: window values summed back into an array of ``shape``."""
        return _col2im(self._xp, cols, shape, kernel, stride, padding)

    # -- max pooling --------------------------------------------------------------------
    def _window_views(self, x, kernel, stride, padding, fill):
        """``x`` padded with ``fill``, and for each window offset (row-major) the strided view of
        the padded input that offset sees, one element per output position."""
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        if ph or pw:
            x = self._xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
        ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
        return x, [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                   for i in range(kh) for j in range(kw)]

    def _first_max_masks(self, views, out):
        """For each window offset, where it holds its window's first maximum (a NaN counts as the
        maximum, since the max is then NaN)."""
        xp = self._xp
        taken = xp.zeros(out.shape, dtype=bool)
        for v in views:
            hit = v == out
            hit |= v != v
            hit &= ~taken
            taken |= hit
            yield hit

    def max_pool2d(self, x, kernel, stride, padding):
        """Max over each (kh, kw) window of (N, C, H, W) ``x``, implicitly padded with -inf."""
        _, views = self._window_views(x, kernel, stride, padding, _lowest(x.dtype))
        out = views[0].copy()
        for v in views[1:]:
            self._xp.maximum(out, v, out=out)
        return out

    def max_pool2d_backward(self, g, x, out, kernel, stride, padding):
        """``g`` (one value per window) sent to each window's first maximum in ``x``, summed where
        windows overlap: the gradient of :meth:`max_pool2d`."""
        xpad, views = self._window_views(x, kernel, stride, padding, _lowest(x.dtype))
        (ph, pw), (h, w) = padding, x.shape[2:]
        gpad, gviews = self._window_views(self._xp.zeros(xpad.shape, dtype=g.dtype), kernel, stride, (0, 0), 0)
        for gv, hit in zip(gviews, self._first_max_masks(views, out)):
            gv += g * hit
        return gpad[:, :, ph:ph + h, pw:pw + w]

    def max_pool2d_gather(self, gx, x, out, kernel, stride, padding):
        """Each window's value of ``gx`` at its first maximum in ``x``: the adjoint of
        :meth:`max_pool2d_backward` (and so its gradient)."""
        _, views = self._window_views(x, kernel, stride, padding, _lowest(x.dtype))
        _, gviews = self._window_views(gx, kernel, stride, padding, 0)
        res = self._xp.zeros(out.shape, dtype=gx.dtype)
        for gv, hit in zip(gviews, self._first_max_masks(views, out)):
            res += gv * hit
        return res

    # -- batch normalisation ----------------------------------------------------------------
    def batch_norm_stats(self, x):
        """Per-channel (axis 1) mean and biased variance of ``x``, each of shape (C,)."""
        axes = channel_axes(x.ndim)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes)
        d = x - mean.reshape(shape)
        return mean, (d * d).mean(axis=axes)

    def batch_norm_forward(self, x, mean, invstd, w, b, relu=False):
        """``(x - mean) * invstd * w + b`` per channel (``w`` and ``b`` may be None), then
        ``max(., 0)`` if ``relu``."""
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        scale = invstd if w is None else invstd * w
        shift = -mean * scale
        if b is not None:
            shift = shift + b
        y = x * scale.reshape(shape).astype(x.dtype, copy=False)
        y += shift.reshape(shape).astype(x.dtype, copy=False)
        return self._xp.maximum(y, 0, out=y) if relu else y

    def batch_norm_backward(self, g, x, mean, invstd, w, needs=(True, True, True), eps=None, out=None):
        """Gradients ``(gx, gw, gb)`` of :meth:`batch_norm_forward` with batch statistics (mean and
        invstd functions of ``x``); None where ``needs`` says no. ``out``: the forward's output when
        it applied the ReLU (``g`` then counts only where ``out > 0``). (``eps`` is for the recorded
        form, which recomputes invstd; here the given invstd already holds it.)

        With xhat = (x - mean) invstd and n values per channel: gb = sum(g), gw = sum(g xhat),
        gx = w invstd (g - gb / n - xhat gw / n).
        """
        if out is not None:
            g = self.relu_backward(g, out)
        axes = channel_axes(x.ndim)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        n = x.size // x.shape[1]
        gb = g.sum(axis=axes)
        d = x - mean.reshape(shape)
        dotp = (d * g).sum(axis=axes)  # centred: no cancellation when the mean is large
        gw = dotp * invstd
        gx = None
        if needs[0]:
            scale = invstd if w is None else invstd * w
            gx = g * scale.reshape(shape).astype(g.dtype, copy=False)
            gx -= (scale * gb / n).reshape(shape).astype(g.dtype, copy=False)
            gx -= d * (scale * invstd * invstd * dotp / n).reshape(shape).astype(g.dtype, copy=False)
        return gx, (gw if needs[1] else None), (gb if needs[2] else None)


    # -- softmax over the last axis -------------------------------------------------------------
    def softmax_forward(self, x):
        """:func:`softmax` of ``x`` over its last axis."""
        return self._rows_softmax(x, False)

    def softmax_backward(self, g, out):
        """:func:`softmax_grad` over the last axis: the gradient given the forward's ``out``."""
        return self._rows_softmax_backward(g, out, False)

    def log_softmax_forward(self, x):
        """:func:`log_softmax` of ``x`` over its last axis."""
        return self._rows_softmax(x, True)

    def log_softmax_backward(self, g, out):
        """:func:`log_softmax_grad` over the last axis: the gradient given the forward's ``out``."""
        return self._rows_softmax_backward(g, out, True)

    # the four above in two: what a compiled namespace overrides
    def _rows_softmax(self, x, log):
        return (log_softmax if log else softmax)(self, x)

    def _rows_softmax_backward(self, g, out, log):
        return (log_softmax_grad if log else softmax_grad)(self, g, out)

    # -- layer normalisation over rows ------------------------------------------------------------
    def layer_norm_forward(self, x, w, b, eps, mean, rstd):
        """Each row of (rows, cols) ``x`` normalised (biased variance), times ``w`` plus ``b``
        (each (cols,) or None). Fills the (rows,) ``mean`` and ``rstd`` = 1 / sqrt(var + eps) (in
        their dtype, :func:`stats_dtype`) and returns the output in ``x``'s dtype promoted with
        ``w``'s and ``b``'s."""
        xp = self._xp
        xs = x.astype(mean.dtype, copy=False)
        mu = xs.mean(axis=1, keepdims=True)
        d = xs - mu
        r = 1 / xp.sqrt((d * d).mean(axis=1, keepdims=True) + eps)
        mean[...] = mu[:, 0]
        rstd[...] = r[:, 0]
        y = d * r
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        return y.astype(xp.result_type(*[a for a in (x, w, b) if a is not None]), copy=False)

    def layer_norm_backward(self, g, x, mean, rstd, w, needs=(True, True, True)):
        """:func:`layer_norm_grad` given the forward's ``mean`` and ``rstd``: ``(gx, gw, gb)`` in
        ``g``'s dtype, None where ``needs`` says no."""
        grads = layer_norm_grad(self, g, x.astype(mean.dtype, copy=False), mean[:, None], rstd[:, None], w, needs)
        return tuple(None if a is None else a.astype(g.dtype, copy=False) for a in grads)
