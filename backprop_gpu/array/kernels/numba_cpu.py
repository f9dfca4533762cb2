"""The ``numba`` backend's array namespace: the fused kernels of the hot ops, compiled.

Each method overrides the reference version of the same name (in
:mod:`backprop_gpu.array.kernels.reference`) for the arrays it handles (C-contiguous
float32/float64 of the expected shapes) and hands anything else to the
reference, so every input is served; ``tests/test_kernels.py`` checks each
against the reference (equal, or to rounding where sums accumulate in float64).

The loops use ``error_model='numpy'`` (no division checks that stop
vectorisation) and are cached on disk. Each is compiled serial and parallel:
arrays of :data:`PARALLEL_MIN` elements or more take the parallel one, on the
workqueue threading layer (see :mod:`backprop_gpu.array.optim.numba_cpu`).
"""
from __future__ import annotations

import numba
import numpy as np

from ..optim.numba_cpu import PARALLEL_MIN, _prefer_workqueue
from ..namespace import ArrayNamespace
from .reference import pool_out_size

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel(fn=None, **opts):
    """``fn`` compiled twice, serial and ``parallel=True`` (its ``numba.prange`` loops
    split across threads); the call picks by the size of the first array. Below
    :data:`~backprop_gpu.array.optim.numba_cpu.PARALLEL_MIN` elements waking the worker threads
    costs more than it saves: on the 2-core VM a parallel launch took ~0.3-0.5 ms,
    against 0.04 ms for a whole 1 MB ReLU pass on one thread. ``opts`` go to ``njit``."""
    if fn is None:
        return lambda f: _kernel(f, **opts)
    jit = dict(cache=True, error_model="numpy", nogil=True, **opts)
    serial = numba.njit(**jit)(fn)
    parallel = numba.njit(parallel=True, **jit)(fn)

    def run(first, *rest):
        return (parallel if first.size >= PARALLEL_MIN else serial)(first, *rest)
    run.serial, run.parallel = serial, parallel
    run.__name__ = run.__qualname__ = fn.__name__
    return run


#: sums that may be reassociated (so LLVM vectorises them); they accumulate in float64
_REDUCE = dict(fastmath={"reassoc"})
#: computed indices are cast to unsigned: Numba wraps negative signed indices around, a select
#: per access that kept the window loops from vectorising (im2col and col2im ran 3-5x slower)
_U = np.uint64


@_kernel
def _bias_relu_rows(y, b):
    n, m = y.shape
    for i in numba.prange(n):
        for j in range(m):
            v = y[i, j] + b[j]
            y[i, j] = 0 if v < 0 else v  # NaN stays NaN, as NumPy's maximum


@_kernel
def _relu_flat(y):
    for i in numba.prange(y.shape[0]):
        if y[i] < 0:
            y[i] = 0


@_kernel
def _relu_backward_flat(g, out, res):
    for i in numba.prange(g.shape[0]):
        res[i] = g[i] if out[i] > 0 else 0


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _relu_backward_colsum_rows(g, out, res, acc):
    n, m = g.shape
    for j in range(m):
        acc[j] = 0
    for i in range(n):  # serial: every row adds into acc (a 1 MB pass takes ~0.1 ms)
        for j in range(m):
            v = g[i, j] if out[i, j] > 0 else 0
            res[i, j] = v
            acc[j] += v


# -- max pooling over non-overlapping windows (stride == kernel, no padding): each input
# element belongs to at most one window, so forward and backward are dense passes. The window
# size is a compile-time constant (a closure), so the window loops unroll. A window's first
# maximum takes the gradient; a NaN counts as the maximum (the max is then NaN). --------------

_POOL: dict = {}


def _pool_kernels(kh, kw):
    """(forward, backward, gather) for (kh, kw) windows, compiled once per size (and cached)."""
    k = _POOL.get((kh, kw))
    if k is not None:
        return k

    @_kernel
    def fwd(x, out):
        N, C = x.shape[0], x.shape[1]
        Ho, Wo = out.shape[2], out.shape[3]
        for n in numba.prange(N):
            for c in range(C):
                for i in range(Ho):
                    for j in range(Wo):
                        best = x[n, c, _U(i * kh), _U(j * kw)]
                        for a in range(kh):
                            for b in range(kw):
                                v = x[n, c, _U(i * kh + a), _U(j * kw + b)]
                                best = v if (v > best) | (v != v) else best
                        out[n, c, i, j] = best

    @numba.njit(inline="always")
    def first_max(x, n, c, i, j, best):
        """Window (i, j)'s offset a * kw + b holding its first maximum (or NaN); kh * kw if none."""
        t = kh * kw
        for s in range(kh * kw - 1, -1, -1):  # scanned backwards, the last hit is the first
            v = x[n, c, _U(i * kh + s // kw), _U(j * kw + s % kw)]
            t = s if (v == best) | (v != v) else t
        return t

    @_kernel
    def bwd(x, out, g, gx):
        N, C, H, W = x.shape
        Ho, Wo = out.shape[2], out.shape[3]
        for n in numba.prange(N):
            for c in range(C):
                for r in range(Ho * kh, H):  # rows and columns no window covers
                    for q in range(W):
                        gx[n, c, r, q] = 0
                for r in range(Ho * kh):
                    for q in range(Wo * kw, W):
                        gx[n, c, r, q] = 0
                for i in range(Ho):
                    for j in range(Wo):
                        # first_max's test, fused with the writes: one pass over the window
                        # (through first_max this kernel took 1.4x as long)
                        best = out[n, c, i, j]
                        gv = g[n, c, i, j]
                        found = False
                        for a in range(kh):
                            for b in range(kw):
                                v = x[n, c, _U(i * kh + a), _U(j * kw + b)]
                                hit = ((v == best) | (v != v)) & (not found)
                                gx[n, c, _U(i * kh + a), _U(j * kw + b)] = gv if hit else 0
                                found = found | hit

    @_kernel
    def gather(x, out, gx, res):
        N, C = x.shape[0], x.shape[1]
        Ho, Wo = out.shape[2], out.shape[3]
        for n in numba.prange(N):
            for c in range(C):
                for i in range(Ho):
                    for j in range(Wo):
                        t = first_max(x, n, c, i, j, out[n, c, i, j])
                        res[n, c, i, j] = gx[n, c, _U(i * kh + t // kw), _U(j * kw + t % kw)] \
                            if t < kh * kw else 0

    k = _POOL[(kh, kw)] = (fwd, bwd, gather)
    return k


def _dense_pool(x, kernel, stride, padding) -> bool:
    return stride == kernel and padding == (0, 0) and x.ndim == 4


# -- batch normalisation over (N, C, L) views; sums in float64 -------------------------------------

@_kernel(**_REDUCE)
def _bn_stats(x, mean, var):
    N, C, L = x.shape
    m = N * L
    for c in numba.prange(C):
        s = 0.0
        for n in range(N):
            for k in range(L):
                s += x[n, c, k]
        mu = s / m
        ss = 0.0
        for n in range(N):
            for k in range(L):
                d = x[n, c, k] - mu
                ss += d * d
        mean[c] = mu
        var[c] = ss / m


@_kernel
def _bn_affine(x, scale, shift, y, relu):
    N, C, L = x.shape
    for nc in numba.prange(N * C):
        n, c = nc // C, nc % C
        a, b = scale[c], shift[c]
        if relu:
            for k in range(L):
                v = x[n, c, k] * a + b
                y[n, c, k] = 0 if v < 0 else v
        else:
            for k in range(L):
                y[n, c, k] = x[n, c, k] * a + b


# ``out``: the forward's output when it applied a ReLU (``masked``); g counts where out > 0

@_kernel(**_REDUCE)
def _bn_sums(x, g, mean, gb, dotp, out, masked):
    N, C, L = x.shape
    for c in numba.prange(C):
        s = 0.0
        sd = 0.0
        mu = mean[c]
        for n in range(N):
            for k in range(L):
                gv = g[n, c, k]
                if masked:
                    gv = gv if out[n, c, k] > 0 else 0
                s += gv
                sd += (x[n, c, k] - mu) * gv
        gb[c] = s
        dotp[c] = sd


@_kernel
def _bn_input_grad(x, g, mean, a, k1, k2, gx, out, masked):
    N, C, L = x.shape
    for nc in numba.prange(N * C):
        n, c = nc // C, nc % C
        mu, ac, b1, b2 = mean[c], a[c], k1[c], k2[c]
        for k in range(L):
            gv = g[n, c, k]
            if masked:
                gv = gv if out[n, c, k] > 0 else 0
            gx[n, c, k] = ac * gv - b1 - (x[n, c, k] - mu) * b2


# -- im2col / col2im: (N, C, H, W) <-> (N, C, kh*kw, Ho, Wo) windows. Kernel size and stride are
# compile-time constants (a closure); for each window row the in-bounds columns are one
# interval, so the inner loops are plain strided copies with no per-element bounds check. ------

_WINDOWS: dict = {}


@numba.njit(inline="always")
def _columns_in_bounds(b, sw, pw, W, Wo):
    """For window column ``b``: the output columns [j0, j1) whose input column j*sw - pw + b lies
    in [0, W), and that input column for j0 (unsigned)."""
    j0 = min(Wo, max(0, (pw - b + sw - 1) // sw))
    j1 = max(j0, min(Wo, (W - 1 + pw - b) // sw + 1))
    return j0, j1, _U(j0 * sw - pw + b)


def _window_kernels(kh, kw, sh, sw):
    """(im2col, col2im) for one kernel size and stride, compiled once (and cached)."""
    k = _WINDOWS.get((kh, kw, sh, sw))
    if k is not None:
        return k

    @_kernel
    def im2col(x, cols, ph, pw, fill):
        N, C, H, W = x.shape
        Ho, Wo = cols.shape[3], cols.shape[4]
        for n in numba.prange(N):
            for c in range(C):
                for a in range(kh):
                    for b in range(kw):
                        t = a * kw + b
                        j0, j1, q0 = _columns_in_bounds(b, sw, pw, W, Wo)
                        for i in range(Ho):
                            r = i * sh - ph + a
                            if r < 0 or r >= H:
                                for j in range(Wo):
                                    cols[n, c, t, i, j] = fill
                            else:
                                for j in range(j0):
                                    cols[n, c, t, i, j] = fill
                                for k in range(j1 - j0):
                                    cols[n, c, t, i, _U(j0 + k)] = x[n, c, _U(r), q0 + _U(k * sw)]
                                for j in range(j1, Wo):
                                    cols[n, c, t, i, j] = fill

    @_kernel
    def col2im(cols, out, ph, pw):
        N, C, H, W = out.shape
        Ho, Wo = cols.shape[3], cols.shape[4]
        for n in numba.prange(N):
            for c in range(C):
                for a in range(kh):
                    for b in range(kw):
                        t = a * kw + b
                        j0, j1, q0 = _columns_in_bounds(b, sw, pw, W, Wo)
                        for i in range(Ho):
                            r = i * sh - ph + a
                            if 0 <= r < H:
                                for k in range(j1 - j0):
                                    out[n, c, _U(r), q0 + _U(k * sw)] += cols[n, c, t, i, _U(j0 + k)]

    k = _WINDOWS[(kh, kw, sh, sw)] = (im2col, col2im)
    return k


def _plain(*arrays) -> bool:
    """Whether every array is C-contiguous, of one float dtype, and non-empty."""
    dt = arrays[0].dtype
    return dt in _FLOATS and all(a.dtype == dt and a.flags.c_contiguous and a.size for a in arrays)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _scatter_add_rows(out, idx, g):
    """``out[idx[i]] += g[i]`` row by row, in order (repeats accumulate); serial, since two
    threads may hit one row. Returns the position of an out-of-range index, or -1."""
    n, m = out.shape
    for i in range(idx.shape[0]):
        r = idx[i]
        if r < 0:
            r += n
        if r < 0 or r >= n:
            return i
        for j in range(m):
            out[r, j] += g[i, j]
    return -1


class NumbaNamespace(ArrayNamespace):
    """``xp`` (NumPy) plus Numba-compiled versions of the fused kernels."""

    def __init__(self, backend):
        super().__init__(backend)
        _prefer_workqueue()

    def bias_relu_(self, y, b):
        if b is None:
            if _plain(y):
                _relu_flat(y.reshape(-1))
                return y
        elif y.ndim >= 1 and b.shape == y.shape[-1:] and _plain(y, b):
            _bias_relu_rows(y.reshape(-1, y.shape[-1]), b)
            return y
        return super().bias_relu_(y, b)

    def index_backward(self, g, shape, key):
        # one integer array along the first axis (an embedding's or index_select's gradient):
        # a compiled row loop, ~30x np.add.at's time on a (20000, 64) table
        k = key[0] if type(key) is tuple and len(key) == 1 else key
        if isinstance(k, np.ndarray) and k.dtype.kind in "iu" and len(shape) >= 1 and \
                g.shape == k.shape + tuple(shape[1:]) and _plain(g):
            out = np.zeros(shape, g.dtype)
            rows = k.reshape(-1).astype(np.int64, copy=False)
            bad = _scatter_add_rows(out.reshape(shape[0], -1), rows, g.reshape(rows.size, -1))
            if bad >= 0:
                raise IndexError(f"index {int(rows[bad])} is out of bounds for dimension 0 with size {shape[0]}")
            return out
        return super().index_backward(g, shape, key)

    def relu_backward(self, g, out):
        if g.shape == out.shape and _plain(g, out):
            res = np.empty_like(g)
            _relu_backward_flat(g.reshape(-1), out.reshape(-1), res.reshape(-1))
            return res
        return super().relu_backward(g, out)

    def relu_backward_colsum(self, g, out):
        if g.ndim >= 1 and g.shape == out.shape and _plain(g, out):
            m = g.shape[-1]
            res = np.empty_like(g)
            acc = np.empty(m, np.float64)
            _relu_backward_colsum_rows(g.reshape(-1, m), out.reshape(-1, m), res.reshape(-1, m), acc)
            return res, acc.astype(g.dtype)
        return super().relu_backward_colsum(g, out)

    # -- max pooling ---------------------------------------------------------------------------
    def max_pool2d(self, x, kernel, stride, padding):
        if _dense_pool(x, kernel, stride, padding) and _plain(x):
            out = np.empty(x.shape[:2] + pool_out_size(*x.shape[2:], kernel, stride, padding), x.dtype)
            _pool_kernels(*kernel)[0](x, out)
            return out
        return super().max_pool2d(x, kernel, stride, padding)

    def max_pool2d_backward(self, g, x, out, kernel, stride, padding):
        if _dense_pool(x, kernel, stride, padding) and g.shape == out.shape and _plain(x, out, g):
            gx = np.empty_like(x)
            _pool_kernels(*kernel)[1](x, out, g, gx)
            return gx
        return super().max_pool2d_backward(g, x, out, kernel, stride, padding)

    def max_pool2d_gather(self, gx, x, out, kernel, stride, padding):
        if _dense_pool(x, kernel, stride, padding) and gx.shape == x.shape and _plain(x, out, gx):
            res = np.empty_like(out)
            _pool_kernels(*kernel)[2](x, out, gx, res)
            return res
        return super().max_pool2d_gather(gx, x, out, kernel, stride, padding)

    # -- batch normalisation --------------------------------------------------------------------
    @staticmethod
    def _ncl(x):
        return x.reshape(x.shape[0], x.shape[1], -1)

    def batch_norm_stats(self, x):
        if x.ndim >= 2 and _plain(x):
            mean = np.empty(x.shape[1], np.float64)
            var = np.empty(x.shape[1], np.float64)
            _bn_stats(self._ncl(x), mean, var)
            return mean.astype(x.dtype), var.astype(x.dtype)
        return super().batch_norm_stats(x)

    def batch_norm_forward(self, x, mean, invstd, w, b, relu=False):
        if x.ndim >= 2 and _plain(x):
            scale = invstd if w is None else invstd * w
            shift = -mean * scale if b is None else b - mean * scale
            y = np.empty_like(x)
            _bn_affine(self._ncl(x), scale.astype(x.dtype), shift.astype(x.dtype), self._ncl(y), relu)
            return y
        return super().batch_norm_forward(x, mean, invstd, w, b, relu)

    def batch_norm_backward(self, g, x, mean, invstd, w, needs=(True, True, True), eps=None, out=None):
        if x.ndim >= 2 and g.shape == x.shape and _plain(x, g) and (out is None or (
                out.shape == x.shape and _plain(x, out))):
            c = x.shape[1]
            gb, dotp = np.empty(c, np.float64), np.empty(c, np.float64)
            x3, g3 = self._ncl(x), self._ncl(g)
            o3 = x3 if out is None else self._ncl(out)  # (unread when not masked)
            m64 = mean.astype(np.float64)
            _bn_sums(x3, g3, m64, gb, dotp, o3, out is not None)
            inv = invstd.astype(np.float64)
            gx = None
            if needs[0]:
                n = x.size // c
                scale = inv if w is None else inv * w
                gx = np.empty_like(x)
                _bn_input_grad(x3, g3, m64, scale, scale * gb / n, scale * inv * inv * dotp / n, self._ncl(gx),
                               o3, out is not None)
            dt = x.dtype
            return gx, ((dotp * inv).astype(dt) if needs[1] else None), (gb.astype(dt) if needs[2] else None)
        return super().batch_norm_backward(g, x, mean, invstd, w, needs, eps, out)

    # -- im2col / col2im ------------------------------------------------------------------------
    def im2col(self, x, kernel, stride, padding, fill=0.0):
        if x.ndim == 4 and _plain(x):
            (kh, kw) = kernel
            cols = np.empty(x.shape[:2] + (kh * kw,) + pool_out_size(*x.shape[2:], kernel, stride, padding), x.dtype)
            _window_kernels(*kernel, *stride)[0](x, cols, *padding, x.dtype.type(fill))
            return cols
        return super().im2col(x, kernel, stride, padding, fill)

    def col2im(self, cols, shape, kernel, stride, padding):
        if cols.ndim == 5 and _plain(cols):
            out = np.zeros(shape, cols.dtype)
            _window_kernels(*kernel, *stride)[1](cols, out, *padding)
            return out
        return super().col2im(cols, shape, kernel, stride, padding)
