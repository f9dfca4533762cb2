"""The ``numba`` backend's array namespace: the fused kernels of the hot ops, compiled.

Each method overrides the reference version of the same name (in
:mod:`backprop_gpu.array.kernels.reference`) for the arrays it handles (C-contiguous
float32/float64 of the expected shapes) and hands anything else to the
reference, so every input is served; ``tests/test_kernels.py`` checks each
against the reference (equal, or to rounding where sums accumulate in float64).

The loops use ``error_model='numpy'`` (no division checks that stop
vectorisation) and are cached on disk. Each is compiled serial and parallel:
arrays of :data:`PARALLEL_MIN` elements or more (fewer for kernels that cost more per
element) take the parallel one, on the workqueue threading layer (see
:mod:`backprop_gpu.array.optim.numba_cpu`).
"""
from __future__ import annotations


import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..optim.numba_cpu import PARALLEL_MIN, _prefer_workqueue, renamed
from ..namespace import ArrayNamespace
from .reference import INV_SQRT2, INV_SQRT2PI, TANH_C, TANH_K, pool_out_size

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel(fn=None, cost=1, **opts):
    """``fn`` compiled twice, serial and ``parallel=True`` (its ``numba.prange`` loops
    split across threads); the call picks by the size of the first array. Below
    :data:`~backprop_gpu.array.optim.numba_cpu.PARALLEL_MIN` elements waking the worker threads
    costs more than it saves: on the 2-core VM a parallel launch took ~0.3-0.5 ms,
    against 0.04 ms for a whole 1 MB ReLU pass on one thread. ``cost``: the kernel's time per
    element in such passes (its arrays' passes and arithmetic), which divides the threshold.
    ``opts`` go to ``njit``."""
    if fn is None:
        return lambda f: _kernel(f, cost, **opts)
    jit = dict(cache=True, error_model="numpy", nogil=True, **opts)
    serial = numba.njit(**jit)(fn)
    parallel = numba.njit(parallel=True, **jit)(renamed(fn, "_parallel"))

    def is_parallel(first):
        return first.size * cost >= PARALLEL_MIN  # the global read at call time (tests lower it)

    def run(first, *rest):
        return (parallel if is_parallel(first) else serial)(first, *rest)
    run.serial, run.parallel, run.is_parallel = serial, parallel, is_parallel
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
def _relu_backward_flat(g, out, res, scale):
    for i in numba.prange(g.shape[0]):
        res[i] = g[i] * scale if out[i] > 0 else 0


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _relu_backward_colsum_rows(g, out, res, acc, scale):
    n, m = g.shape
    for j in range(m):
        acc[j] = 0
    for i in range(n):  # serial: every row adds into acc (a 1 MB pass takes ~0.1 ms)
        for j in range(m):
            v = g[i, j] * scale if out[i, j] > 0 else 0
            res[i, j] = v
            acc[j] += v


# -- GELU. float32: Phi(x) = erfc(-x / sqrt 2) / 2 through the Chebyshev fit of erfc of Numerical
# Recipes (relative error < 1.2e-7 everywhere: no cancellation in the negative tail, unlike
# 1 + erf), in three passes: a compiled one makes each element's exp (or tanh) argument, NumPy's
# SIMD exp (tanh) takes them in place, a compiled one finishes. Numba's exp and tanh are scalar libm
# calls: 1.8 and 9.4 ms per 2**19 float32 against NumPy's 0.24 and 0.18 ms here. float64: the tanh
# form so too; the exact form is the reference's (the fit is not float64-accurate, and libm's erf in
# a compiled loop was slower than SciPy's) ---------------------------------------------------------

_ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
             1.48851587, -0.82215223, 0.17087277)
_ERFC, _TANH = 0, 1  # the float32 forms; float64 takes exact (erf) or tanh


@numba.njit(inline="always")
def _erfc_fit(v):
    """``(t, p)`` with erfc(|v| / sqrt 2) = t exp(p - v^2 / 2), in float64."""
    t = 1.0 / (1.0 + 0.5 * INV_SQRT2 * abs(v))
    c = _ERFC_FIT
    p = c[0] + t * (c[1] + t * (c[2] + t * (c[3] + t * (c[4] + t * (c[5] + t * (c[6] + t * (
        c[7] + t * (c[8] + t * c[9]))))))))
    return t, p


@_kernel
def _gelu_args(x, a, mode):
    """a[0] = the exp argument p - x^2 / 2 (erfc form) or the tanh argument; for the backward
    (``a`` of two rows, erfc form) a[1] = -x^2 / 2 as well."""
    for i in numba.prange(x.shape[0]):
        v = np.float64(x[i])
        if mode == _TANH:
            a[0, i] = TANH_C * (v + TANH_K * v * v * v)
        else:
            _, p = _erfc_fit(v)
            a[0, i] = p - 0.5 * v * v
            if a.shape[0] == 2:
                a[1, i] = -0.5 * v * v


@_kernel
def _gelu_finish(x, a, y, mode):
    """y = GELU(x) given a[0] = exp (erfc form) or tanh of :func:`_gelu_args`'s argument."""
    for i in numba.prange(x.shape[0]):
        v = np.float64(x[i])
        if mode == _TANH:
            y[i] = 0.5 * v * (1.0 + a[0, i])
        else:
            t, _ = _erfc_fit(v)
            h = 0.5 * t * a[0, i]  # Phi(-|v|)
            y[i] = v * (h if v < 0 else 1.0 - h)


@_kernel
def _gelu_backward_finish(g, x, a, res, mode):
    """res = g GELU'(x) given a[0] (as :func:`_gelu_finish`) and, for the erfc form, a[1] = exp(-x^2 / 2)."""
    for i in numba.prange(x.shape[0]):
        v = np.float64(x[i])
        if mode == _TANH:
            t = np.float64(a[0, i])
            d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * TANH_C * (1.0 + 3 * TANH_K * v * v)
        else:
            t, _ = _erfc_fit(v)
            h = 0.5 * t * a[0, i]
            d = (h if v < 0 else 1.0 - h) + v * a[1, i] * INV_SQRT2PI
        res[i] = g[i] * d


def _gelu_passes(x, approximate, g=None):
    """GELU of flat ``x``, or with ``g`` its gradient, in the three passes above."""
    mode = _TANH if approximate == "tanh" else _ERFC
    a = np.empty((2 if g is not None and mode == _ERFC else 1, x.shape[0]), x.dtype)
    _gelu_args(x, a, mode)
    (np.tanh if mode == _TANH else np.exp)(a, out=a)
    out = np.empty_like(x)
    if g is None:
        _gelu_finish(x, a, out, mode)
    else:
        _gelu_backward_finish(g, x, a, out, mode)
    return out


@_kernel
def _dropout_backward_flat(g, keep, res, scale):
    zero = scale * 0  # g * 0 where dropped, as the reference's mask product (inf, NaN stay NaN)
    for i in numba.prange(g.shape[0]):
        res[i] = g[i] * (scale if keep[i] else zero)


def _gelu_compiled(approximate, *arrays) -> bool:
    """Whether :func:`_gelu_passes` takes these: float32 either form, float64 the tanh form."""
    return _plain(*arrays) and (approximate == "tanh" or (approximate == "none" and arrays[0].dtype == np.float32))


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


# -- softmax and LayerNorm over the rows of (rows, cols) arrays ------------------------------------
# There is no SVML here, so math.exp is a libm call per element (~10x NumPy's SIMD exp): _exp is
# a polynomial LLVM vectorises (<= 1.0 ulp in float32, 1.4 in float64 against exp in float64,
# gradual underflow and overflow to inf kept). Its Cody-Waite reduction must not be reassociated,
# so it is called from loops without fastmath; the sums are separate functions that may be.

@intrinsic
def _bits_float(typingctx, bits):
    """The float32 (float64) whose bit pattern is the int32 (int64) ``bits``."""
    to = {types.int32: (types.float32, ir.FloatType()), types.int64: (types.float64, ir.DoubleType())}.get(bits)
    if to is None:
        return None
    return to[0](bits), lambda context, builder, sig, args: builder.bitcast(args[0], to[1])


def _flip(builder, bits):
    """Bit patterns made monotone and back (an involution): a negative float's magnitude bits
    flipped, so that integer order is float order."""
    width = bits.type.width
    return builder.xor(bits, builder.lshr(builder.ashr(bits, ir.Constant(bits.type, width - 1)),
                                          ir.Constant(bits.type, 1)))


@intrinsic
def _ordered(typingctx, x):
    """The float32 (float64) ``x`` as an int32 (int64) ordered as the floats are (NaNs aside)."""
    to = {types.float32: (types.int32, ir.IntType(32)), types.float64: (types.int64, ir.IntType(64))}.get(x)
    if to is None:
        return None
    return to[0](x), lambda context, builder, sig, args: _flip(builder, builder.bitcast(args[0], to[1]))


@intrinsic
def _unordered(typingctx, k):
    """The inverse of :func:`_ordered`."""
    to = {types.int32: ir.FloatType(), types.int64: ir.DoubleType()}.get(k)
    if to is None:
        return None
    res = types.float32 if k == types.int32 else types.float64
    return res(k), lambda context, builder, sig, args: builder.bitcast(_flip(builder, args[0]), to)


_f4 = np.float32
_LO4, _HI4, _L2E4, _HALF4, _ONE4 = _f4(-104.0), _f4(89.0), _f4(1.4426950408889634), _f4(0.5), _f4(1.0)
_C1_4, _C2_4 = _f4(0.693359375), _f4(-2.12194440e-4)  # ln 2 in two parts (Cephes expf)
_P4 = tuple(_f4(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                             1.6666665459e-1, 5.0000001201e-1))
_P4_0, _P4_1, _P4_2, _P4_3, _P4_4, _P4_5 = _P4
_C1_8, _C2_8 = 6.93145751953125e-1, 1.42860682030941723212e-6  # Cephes exp: ln 2, and a Pade form
_P8_0, _P8_1, _P8_2 = 1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1
_Q8_0, _Q8_1, _Q8_2, _Q8_3 = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
                              2.00000000000000000009e0)


def _exp32(x):
    """exp(x) = p(r) 2^k with x = k ln 2 + r; 2^k as two factors, so that results below the
    smallest normal float (k < -126) round as denormals and large ones overflow to inf."""
    x = _LO4 if x < _LO4 else x  # (a NaN passes both)
    x = _HI4 if x > _HI4 else x
    t = x * _L2E4
    k = np.int32(t + _HALF4) if t >= 0 else np.int32(t - _HALF4)
    k = k if x == x else np.int32(0)
    kf = np.float32(k)
    r = x - kf * _C1_4 - kf * _C2_4
    p = (((((_P4_0 * r + _P4_1) * r + _P4_2) * r + _P4_3) * r + _P4_4) * r + _P4_5) * r * r + r + _ONE4
    k1 = k >> 1
    return p * _bits_float(np.int32((k1 + 127) << 23)) * _bits_float(np.int32((k - k1 + 127) << 23))


def _exp64(x):
    """:func:`_exp32` in float64."""
    x = -746.0 if x < -746.0 else x
    x = 710.0 if x > 710.0 else x
    t = x * 1.4426950408889634
    k = np.int64(t + 0.5) if t >= 0 else np.int64(t - 0.5)
    k = k if x == x else np.int64(0)
    kf = np.float64(k)
    r = x - kf * _C1_8 - kf * _C2_8
    rr = r * r
    px = r * ((_P8_0 * rr + _P8_1) * rr + _P8_2)
    e = 1.0 + 2.0 * (px / ((((_Q8_0 * rr + _Q8_1) * rr + _Q8_2) * rr + _Q8_3) - px))
    k1 = k >> 1
    return e * _bits_float((k1 + 1023) << 52) * _bits_float((k - k1 + 1023) << 52)


def _exp(x):
    raise NotImplementedError("compiled only")


@overload(_exp, jit_options=dict(error_model="numpy"))
def _exp_overload(x):
    return {types.float32: _exp32, types.float64: _exp64}.get(x)


_JIT = dict(cache=True, error_model="numpy", nogil=True)

_T1_4, _T2_4, _T3_4, _T4_4, _T5_4 = (_f4(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                                       1.33314422036e-1, -3.33332819422e-1))
_TANH_SMALL4, _TWO4 = _f4(0.625), _f4(2.0)


@numba.njit(inline="always", **_JIT)  # inlined in Numba's IR: as a call LLVM left it scalar (7.8 ns an element)
def _tanh32(x):
    """tanh of a float32 through :func:`_exp32` (``_exp``, which vectorises; libm's tanhf does not): Cephes'
    tanhf, an odd polynomial below 0.625 in magnitude (no cancellation near 0), else
    1 - 2 / (exp(2|x|) + 1) with the sign put back (exp overflowing to inf gives 1)."""
    z = x * x
    small = ((((_T1_4 * z + _T2_4) * z + _T3_4) * z + _T4_4) * z + _T5_4) * z * x + x
    ax = -x if x < 0 else x
    big = _ONE4 - _TWO4 / (_exp(_TWO4 * ax) + _ONE4)
    big = -big if x < 0 else big
    return small if ax < _TANH_SMALL4 else big


@numba.njit(inline="always", **_JIT)
def _sigmoid32(x):
    """1 / (1 + exp(-x)) in float32 (0 where exp(-x) overflows)."""
    return _ONE4 / (_ONE4 + _exp(-x))


# one simple loop per activation: with the five in one loop body LLVM left it scalar (8x slower)
@_kernel(cost=8)  # five activations per column: arithmetic, not memory
def _lstm_cell_rows(a, c, out):
    n, h = c.shape
    for r in numba.prange(n):
        for j in range(2 * h):
            out[r, 2 * h + j] = _sigmoid32(a[r, j])  # i, f
        for j in range(h):
            out[r, 4 * h + j] = _tanh32(a[r, 2 * h + j])  # g
        for j in range(h):
            out[r, 5 * h + j] = _sigmoid32(a[r, 3 * h + j])  # o
        for j in range(h):
            out[r, h + j] = out[r, 3 * h + j] * c[r, j] + out[r, 2 * h + j] * out[r, 4 * h + j]
        for j in range(h):
            out[r, j] = out[r, 5 * h + j] * _tanh32(out[r, h + j])


@_kernel(cost=4)
def _lstm_cell_backward_rows(g, dhr, dcr, out, cp, da, dcn):
    n, h = cp.shape
    one = np.float32(1)
    for r in numba.prange(n):
        for j in range(h):
            dcn[r, j] = _tanh32(out[r, h + j])  # tanh(c), until dc f replaces it below
        for j in range(h):
            dh = g[r, j] + dhr[r, j]
            ig, fg, gg, og = out[r, 2 * h + j], out[r, 3 * h + j], out[r, 4 * h + j], out[r, 5 * h + j]
            tc = dcn[r, j]
            dc = (g[r, h + j] + dcr[r, j]) + dh * og * (one - tc * tc)
            da[r, j] = (dc * gg + g[r, 2 * h + j]) * ig * (one - ig)
            da[r, h + j] = (dc * cp[r, j] + g[r, 3 * h + j]) * fg * (one - fg)
            da[r, 2 * h + j] = (dc * ig + g[r, 4 * h + j]) * (one - gg * gg)
            da[r, 3 * h + j] = (dh * tc + g[r, 5 * h + j]) * og * (one - og)
            dcn[r, j] = dc * fg


@numba.njit(**_JIT)
def _row_max(a):
    """The largest of ``a`` (a NaN may or may not win: a softmax row with one is NaN anyway),
    compared as :func:`_ordered` integers, which vectorise where the float comparisons did not
    (~4x faster)."""
    m = _ordered(a[0])
    for j in range(a.shape[0]):
        k = _ordered(a[j])
        m = k if k > m else m
    return _unordered(m)


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _row_sum(a):
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j]
    return s


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _row_dot(a, b):
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@numba.njit(**_JIT)
def _exp_shifted(x, c, out):
    for j in range(x.shape[0]):
        out[j] = _exp(x[j] - c)


@_kernel(cost=2)  # the exp polynomial: more arithmetic than memory
def _softmax_rows(x, y, log):
    n = x.shape[0]
    for i in numba.prange(n):
        xi, yi = x[i], y[i]
        m = _row_max(xi)
        _exp_shifted(xi, m, yi)
        s = _row_sum(yi)
        if log:  # (x - max) - log(s), as the reference: max + log(s) would round at the max's scale
            ls = xi.dtype.type(np.log(s))
            for j in range(xi.shape[0]):
                yi[j] = (xi[j] - m) - ls
        else:
            inv = yi.dtype.type(1.0 / s)
            for j in range(yi.shape[0]):
                yi[j] *= inv


@_kernel
def _softmax_backward_rows(g, out, gx, log):
    n = g.shape[0]
    for i in numba.prange(n):
        gi, oi, ri = g[i], out[i], gx[i]
        if log:  # g - exp(out) sum(g)
            s = gi.dtype.type(_row_sum(gi))
            _exp_shifted(oi, oi.dtype.type(0), ri)
            for j in range(gi.shape[0]):
                ri[j] = gi[j] - ri[j] * s
        else:  # out (g - sum(g out))
            s = gi.dtype.type(_row_dot(gi, oi))
            for j in range(gi.shape[0]):
                ri[j] = oi[j] * (gi[j] - s)


# -- cross-entropy of (N, C) logits against integer targets: each row's max, exponentials (into the
# scratch ``e``; the backward recomputes them) and log-sum in one compiled pass; the reduction stays
# the reference's NumPy sum

@_kernel(cost=2)
def _cross_entropy_rows(x, t, ignore, ls, e, loss):
    """loss[i] per row (0 where t[i] is ``ignore``; an out-of-range target reads class 0, as the
    reference); returns (the rows counted, the counted rows whose target is out of range)."""
    n, c = x.shape
    counted = 0
    bad = 0
    for i in numba.prange(n):
        xi, ei = x[i], e[i]
        m = _row_max(xi)
        _exp_shifted(xi, m, ei)
        ti = t[i]
        if ti == ignore:
            loss[i] = 0
        else:
            counted += 1
            ok = ti >= 0 and ti < c
            bad += 0 if ok else 1
            lse = np.log(_row_sum(ei))
            li = lse - (np.float64(xi[ti if ok else 0]) - m)
            if ls != 0:
                li = (1 - ls) * li + ls * (lse - (_row_sum(xi) / c - m))
            loss[i] = li
    return counted, bad


@_kernel(cost=2)
def _cross_entropy_backward_rows(x, t, ignore, ls, scale, per_row, res):
    """res = (softmax(x) - ((1 - ls) one_hot(t) + ls / C)) * scale (scale[i] when ``per_row``), 0 on
    ignored rows."""
    n, c = x.shape
    for i in numba.prange(n):
        xi, ri = x[i], res[i]
        ti = t[i]
        if ti == ignore:
            for j in range(c):
                ri[j] = 0
            continue
        m = _row_max(xi)
        _exp_shifted(xi, m, ri)
        inv = ri.dtype.type(1.0 / _row_sum(ri))
        sc = scale[i] if per_row else scale[0]
        off = ri.dtype.type(ls / c)
        on = ri.dtype.type(1 - ls) + off
        for j in range(c):
            ri[j] = (ri[j] * inv - (on if j == ti else off)) * sc


@_kernel(**_REDUCE)
def _layer_norm_rows(x, w, b, eps, y, mean, rstd, has_w, has_b):
    n, m = x.shape
    for i in numba.prange(n):
        s = 0.0
        for j in range(m):
            s += x[i, j]
        mu = s / m
        ss = 0.0
        for j in range(m):
            d = x[i, j] - mu
            ss += d * d
        mean[i] = mu
        rstd[i] = 1.0 / np.sqrt(ss / m + eps)
        mt, rt = mean[i], rstd[i]  # in the statistics' dtype, as the reference
        if has_w and has_b:
            for j in range(m):
                y[i, j] = (x[i, j] - mt) * rt * w[j] + b[j]
        elif has_w:
            for j in range(m):
                y[i, j] = (x[i, j] - mt) * rt * w[j]
        elif has_b:
            for j in range(m):
                y[i, j] = (x[i, j] - mt) * rt + b[j]
        else:
            for j in range(m):
                y[i, j] = (x[i, j] - mt) * rt


# the weight's and bias's gradients are column sums: each of ``chunks`` row ranges sums into its
# own row of acc_w and acc_b (float64), so threads never add into one slot
@_kernel(**_REDUCE)
def _layer_norm_backward_rows(g, x, mean, rstd, w, gx, acc_w, acc_b, has_w, need_x, need_wb):
    n, m = x.shape
    chunks = acc_w.shape[0]
    per = (n + chunks - 1) // chunks
    for c in numba.prange(chunks):
        for i in range(c * per, min(n, (c + 1) * per)):
            mu, r = mean[i], rstd[i]
            s1 = 0.0
            s2 = 0.0
            if need_x:
                for j in range(m):
                    gy = g[i, j] * w[j] if has_w else g[i, j]
                    s1 += gy
                    s2 += gy * ((x[i, j] - mu) * r)
            a1, a2 = x.dtype.type(s1 / m), x.dtype.type(s2 / m)
            for j in range(m):  # one pass for gx and the column sums
                gv = g[i, j]
                xh = (x[i, j] - mu) * r
                if need_x:
                    gx[i, j] = r * ((gv * w[j] if has_w else gv) - a1 - xh * a2)
                if need_wb:
                    acc_w[c, j] += gv * xh
                    acc_b[c, j] += gv


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

    def index_backward(self, g, shape, key, out=None):
        # one integer array along the first axis (an embedding's or index_select's gradient):
        # a compiled row loop, ~30x np.add.at's time on a (20000, 64) table
        k = key[0] if type(key) is tuple and len(key) == 1 else key
        if isinstance(k, np.ndarray) and k.dtype.kind in "iu" and len(shape) >= 1 and \
                g.shape == k.shape + tuple(shape[1:]) and _plain(g) and (out is None or out.flags.c_contiguous):
            if out is None:
                out = np.zeros(shape, g.dtype)
            else:
                out.fill(0)
            rows = k.reshape(-1).astype(np.int64, copy=False)
            bad = _scatter_add_rows(out.reshape(shape[0], -1), rows, g.reshape(rows.size, -1))
            if bad >= 0:
                raise IndexError(f"index {int(rows[bad])} is out of bounds for dimension 0 with size {shape[0]}")
            return out
        return super().index_backward(g, shape, key, out)

    def relu_backward(self, g, out, scale=1.0):
        if g.shape == out.shape and _plain(g, out):
            res = np.empty_like(g)
            _relu_backward_flat(g.reshape(-1), out.reshape(-1), res.reshape(-1), g.dtype.type(scale))
            return res
        return super().relu_backward(g, out, scale)

    def relu_backward_colsum(self, g, out, scale=1.0):
        if g.ndim >= 1 and g.shape == out.shape and _plain(g, out):
            m = g.shape[-1]
            res = np.empty_like(g)
            acc = np.empty(m, np.float64)
            _relu_backward_colsum_rows(g.reshape(-1, m), out.reshape(-1, m), res.reshape(-1, m), acc,
                                       g.dtype.type(scale))
            return res, acc.astype(g.dtype)
        return super().relu_backward_colsum(g, out, scale)

    # -- GELU ------------------------------------------------------------------------------------
    def gelu_forward(self, x, approximate="none"):
        if _gelu_compiled(approximate, x):
            return _gelu_passes(x.reshape(-1), approximate).reshape(x.shape)
        return super().gelu_forward(x, approximate)

    def gelu_backward(self, g, x, approximate="none"):
        if g.shape == x.shape and _gelu_compiled(approximate, g, x):
            return _gelu_passes(x.reshape(-1), approximate, g.reshape(-1)).reshape(x.shape)
        return super().gelu_backward(g, x, approximate)

    def dropout_backward(self, g, keep, p):
        if keep.shape == g.shape and keep.dtype == np.bool_ and keep.flags.c_contiguous and _plain(g):
            res = np.empty_like(g)
            _dropout_backward_flat(g.reshape(-1), keep.reshape(-1), res.reshape(-1), g.dtype.type(1 / (1 - p)))
            return res
        return super().dropout_backward(g, keep, p)

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

    # -- the LSTM cell (float32: its activations through the vectorised exp) -------------------------
    def lstm_cell_(self, a, c, out):
        H = c.shape[-1] if c.ndim == 2 else 0
        if a.dtype == c.dtype == out.dtype == np.float32 and c.ndim == 2 and a.shape == (c.shape[0], 4 * H) \
                and out.shape == (c.shape[0], 6 * H) and a.size:
            _lstm_cell_rows(a, c, out)
            return out
        return super().lstm_cell_(a, c, out)

    def lstm_cell_backward(self, g, dh_rec, dc_rec, out, c_prev):
        H = c_prev.shape[-1] if c_prev.ndim == 2 else 0
        arrays = [a for a in (g, dh_rec, dc_rec, out, c_prev) if a is not None]
        if all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays) and c_prev.ndim == 2 and H \
                and g.shape == out.shape == (c_prev.shape[0], 6 * H) \
                and all(a.shape == c_prev.shape for a in (dh_rec, dc_rec) if a is not None):
            zero = np.zeros_like(c_prev) if dh_rec is None or dc_rec is None else None
            da = np.empty((c_prev.shape[0], 4 * H), np.float32)
            dcn = np.empty_like(c_prev)
            _lstm_cell_backward_rows(g, zero if dh_rec is None else dh_rec, zero if dc_rec is None else dc_rec,
                                     out, c_prev, da, dcn)
            return da, dcn
        return super().lstm_cell_backward(g, dh_rec, dc_rec, out, c_prev)

    # -- cross-entropy -------------------------------------------------------------------------------
    def _ce_takes(self, x, t):
        return (x.ndim == 2 and x.size and _plain(x) and isinstance(t, np.ndarray) and t.shape == x.shape[:1]
                and t.dtype.kind in "iu")

    def cross_entropy_forward(self, x, t, ignore_index, label_smoothing, reduction, count, stats=None):
        if not self._ce_takes(x, t):
            return super().cross_entropy_forward(x, t, ignore_index, label_smoothing, reduction, count, stats)
        loss = np.empty(x.shape[0], x.dtype)
        counted, bad = _cross_entropy_rows(x, t.astype(np.int64, copy=False), int(ignore_index),
                                           float(label_smoothing), np.empty_like(x), loss)
        if stats is not None:
            stats[0][...] = counted
            stats[1][...] = bad > 0
        if reduction == "none":
            return loss
        total = loss.sum()
        return (total / count).astype(x.dtype) if reduction == "mean" else total

    def cross_entropy_backward(self, g, x, t, ignore_index, label_smoothing, reduction, count):
        if not self._ce_takes(x, t) or not isinstance(g, np.ndarray):
            return super().cross_entropy_backward(g, x, t, ignore_index, label_smoothing, reduction, count)
        per_row = reduction == "none"
        scale = (g if per_row else (g / count if reduction == "mean" else g)).astype(x.dtype).reshape(-1)
        res = np.empty_like(x)
        _cross_entropy_backward_rows(x, t.astype(np.int64, copy=False), int(ignore_index), float(label_smoothing),
                                     scale, per_row, res)
        return res

    # -- softmax over the last axis; LayerNorm over rows ---------------------------------------------
    def _rows_softmax(self, x, log):
        if x.ndim and not x.size:  # nothing to compute, in any dtype
            return np.empty_like(x)
        if not (x.ndim and _plain(x)):
            return super()._rows_softmax(x, log)
        y = np.empty_like(x)
        _softmax_rows(x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1]), log)
        return y

    def _rows_softmax_backward(self, g, out, log):
        if not (g.ndim and g.shape == out.shape):
            return super()._rows_softmax_backward(g, out, log)
        if not g.size:
            return np.empty_like(g)
        if not _plain(g, out):
            return super()._rows_softmax_backward(g, out, log)
        gx = np.empty_like(g)
        m = g.shape[-1]
        _softmax_backward_rows(g.reshape(-1, m), out.reshape(-1, m), gx.reshape(-1, m), log)
        return gx

    def layer_norm_forward(self, x, w, b, eps, mean, rstd):
        wb = [a for a in (w, b) if a is not None]
        if x.ndim == 2 and _plain(x, mean, rstd, *wb) and all(a.shape == x.shape[1:] for a in wb):
            y = np.empty_like(x)
            dummy = x[0]  # for an absent w or b (unread): one compiled signature
            _layer_norm_rows(x, dummy if w is None else w, dummy if b is None else b, float(eps), y, mean, rstd,
                             w is not None, b is not None)
            return y
        return super().layer_norm_forward(x, w, b, eps, mean, rstd)

    def layer_norm_backward(self, g, x, mean, rstd, w, needs=(True, True, True)):
        if x.ndim == 2 and g.shape == x.shape and _plain(g, x, mean, rstd, *([] if w is None else [w])) and (
                w is None or w.shape == x.shape[1:]):
            n, m = x.shape
            chunks = numba.get_num_threads() if _layer_norm_backward_rows.is_parallel(x) else 1
            need_wb = bool(needs[1] or needs[2])
            acc_w, acc_b = (np.zeros((chunks, m) if need_wb else (1, 1)) for _ in range(2))
            gx = np.empty_like(x) if needs[0] else x  # (unwritten when not needed)
            kernel = _layer_norm_backward_rows.parallel if chunks > 1 else _layer_norm_backward_rows.serial
            kernel(g, x, mean, rstd, x[0] if w is None else w, gx, acc_w, acc_b, w is not None, bool(needs[0]),
                   need_wb)
            gw = acc_w.sum(axis=0).astype(x.dtype) if needs[1] else None
            gb = acc_b.sum(axis=0).astype(x.dtype) if needs[2] else None
            return (gx if needs[0] else None), gw, gb
        return super().layer_norm_backward(g, x, mean, rstd, w, needs)

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
