"""The ``cupy`` backend's fused kernels of the hot ops: CUDA C compiled by NVRTC through CuPy.

:data:`SOURCE` states each kernel once, for float and double (``BPG_KERNELS(T, sfx)``), with the
contract of its reference in :mod:`.reference`. It is written so that the same text is also
plain C99: under ``__CUDACC__`` (NVRTC) a kernel's loops are spread over threads, warps and
blocks; otherwise (the host build the tests compare with NumPy, and the recording CuPy stand-in
runs) they are ordinary loops, and the warp and block reductions are no-ops.

* ``bpg_relu_<sfx>``, ``bpg_bias_relu_<sfx>``: ``y = max(y + b, 0)`` in place, one grid-stride pass.
* ``bpg_relu_backward_<sfx>``: ``g * (out > 0)``.
* ``bpg_relu_backward_colsum_<sfx>``: that, and its column sums (accumulated in double), one
  thread per column walking the rows: one launch for both.
* ``bpg_ce_forward_<sfx>``: the whole cross-entropy in one block (a warp per row: max, sum of
  exponentials, the target's logit and the smoothing mean; then the block sums the losses, the
  counted rows and the range check): one launch for loss, reduction, count and check.
* ``bpg_ce_backward_<sfx>``: ``(softmax - target) * scale`` per row, a warp per row: one launch.
* ``bpg_class_target_stats_<sfx>``: the counted targets and the range check of the other class
  losses (``nll_loss``, class weights), in one block: one launch.

Python numbers are kernel arguments (NumPy scalars of the parameter's type), never 0-d device
arrays. Each backend's namespace compiles the module once per device on first use and keeps its
functions (CuPy caches the binary on disk as well). Arrays the kernels do not take (other
dtypes, non-contiguous layouts, a ``count`` array that is not the forward's own) go to the
reference. Nothing here touches CuPy at import time.
"""
from __future__ import annotations

import numpy as np

from ..namespace import ArrayNamespace

THREADS = 256
#: the cross-entropy forward runs in one block of this many threads (a warp per row at a time)
CE_THREADS = 256
OPTIONS = ("--std=c++14",)
_SUFFIX = {"float32": "f32", "float64": "f64"}
_REDUCTION = {"none": 0, "sum": 1, "mean": 2}

PRELUDE = r"""
typedef long long i64;
#ifdef __CUDACC__
#define BPG_KERNEL extern "C" __global__ void
#define BPG_GRID(i, n) for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); \
                            i += (i64)blockDim.x * gridDim.x)
/* a warp per row: rows over the warps of the grid, a row's columns over the warp's lanes */
#define BPG_WARP_ID ((blockIdx.x * (i64)blockDim.x + threadIdx.x) / 32)
#define BPG_WARPS ((i64)blockDim.x * gridDim.x / 32)
#define BPG_ROWS(r, n) for (i64 r = BPG_WARP_ID; r < (n); r += BPG_WARPS)
#define BPG_LANES(j, c) for (i64 j = threadIdx.x % 32; j < (c); j += 32)
/* every lane gets OP over the warp's 32 values; the shuffle is taken once, by all lanes, before OP */
#define BPG_WARP_ALL(v, OP) for (int o_ = 16; o_ > 0; o_ >>= 1) { \
    decltype(v) w_ = __shfl_xor_sync(0xffffffffu, v, o_); v = OP(v, w_); }
#define BPG_LANE0 (threadIdx.x % 32 == 0)
#define BPG_NEG_INF __longlong_as_double(0xfff0000000000000ull)
#else
#include <math.h>
#define BPG_KERNEL void
#define BPG_GRID(i, n) for (i64 i = 0; i < (n); ++i)
#define BPG_ROWS(r, n) for (i64 r = 0; r < (n); ++r)
#define BPG_LANES(j, c) for (i64 j = 0; j < (c); ++j)
#define BPG_WARP_ALL(v, OP)
#define BPG_LANE0 1
#define BPG_NEG_INF (-INFINITY)
#endif
#define BPG_MAXNAN(a, b) ((a) > (b) || (a) != (a) ? (a) : (b))  /* NaN wins, as NumPy's max */
#define BPG_ADD(a, b) ((a) + (b))
#define BPG_OR(a, b) ((a) | (b))
"""

BODY = r"""
#define BPG_KERNELS(T, sfx, EXP, LOG) \
BPG_KERNEL bpg_relu_##sfx(T *y, i64 n) { \
    BPG_GRID(i, n) { T v = y[i]; y[i] = v > (T)0 || v != v ? v : (T)0; } \
} \
BPG_KERNEL bpg_bias_relu_##sfx(T *y, const T *b, i64 n, i64 cols) { \
    BPG_GRID(i, n) { T v = y[i] + b[i % cols]; y[i] = v > (T)0 || v != v ? v : (T)0; } \
} \
BPG_KERNEL bpg_relu_backward_##sfx(const T *g, const T *out, T *res, i64 n) { \
    BPG_GRID(i, n) res[i] = g[i] * (T)(out[i] > (T)0); \
} \
BPG_KERNEL bpg_relu_backward_colsum_##sfx(const T *g, const T *out, T *res, T *colsum, i64 rows, i64 cols) { \
    BPG_GRID(j, cols) { \
        double acc = 0.0; \
        for (i64 r = 0; r < rows; ++r) { \
            i64 k = r * cols + j; \
            T v = g[k] * (T)(out[k] > (T)0); \
            res[k] = v; \
            acc += (double)v; \
        } \
        colsum[j] = (T)acc; \
    } \
} \
/* (loss, counted, bad): loss (n,) for reduction 0, else loss[0] = the sum (1) or the sum divided \
   by divisor (2), where divisor is the counted rows when own_count, else the given one */ \
BPG_KERNEL bpg_ce_forward_##sfx(const T *x, const i64 *t, T *loss, T *counted, unsigned char *bad, i64 n, \
                                i64 c, i64 ignore, T ls, T keep, int reduction, int own_count, T divisor) { \
    double total = 0.0; \
    i64 cnt = 0; \
    int oob = 0; \
    BPG_ROWS(r, n) { \
        const T *xr = x + r * c; \
        i64 tr = t[r]; \
        int counts = tr != ignore, inside = tr >= 0 && tr < c; \
        T m = (T)BPG_NEG_INF; \
        BPG_LANES(j, c) m = BPG_MAXNAN(m, xr[j]); \
        BPG_WARP_ALL(m, BPG_MAXNAN) \
        T se = (T)0, ss = (T)0, st = (T)0; \
        BPG_LANES(j, c) { \
            T s = xr[j] - m; \
            se += EXP(s); \
            ss += s; \
            if (j == (counts && inside ? tr : 0)) st = s; \
        } \
        BPG_WARP_ALL(se, BPG_ADD) \
        BPG_WARP_ALL(ss, BPG_ADD) \
        BPG_WARP_ALL(st, BPG_ADD) \
        T lse = LOG(se); \
        T l = lse - st; \
        if (ls != (T)0) l = keep * l + ls * (lse - ss / (T)c); \
        if (!counts) l = (T)0; \
        if (BPG_LANE0) { \
            if (reduction == 0) loss[r] = l; \
            total += (double)l; \
            cnt += counts; \
            oob |= counts && !inside; \
        } \
    } \
    BPG_BLOCK_REDUCE(total, cnt, oob) \
    if (BPG_THREAD0) { \
        if (reduction == 1) loss[0] = (T)total; \
        if (reduction == 2) loss[0] = own_count ? (T)(total / (double)cnt) : (T)total / divisor; \
        counted[0] = (T)cnt; \
        bad[0] = (unsigned char)(oob != 0); \
    } \
} \
/* counted[0] = how many t are not ignore, bad[0] = whether one of those is outside [0, c): one block */ \
BPG_KERNEL bpg_class_target_stats_##sfx(const i64 *t, T *counted, unsigned char *bad, i64 n, i64 c, i64 ignore) { \
    double total = 0.0; \
    i64 cnt = 0; \
    int oob = 0; \
    BPG_BLOCK_ITEMS(i, n) { \
        i64 ti = t[i]; \
        int counts = ti != ignore; \
        cnt += counts; \
        oob |= counts && !(ti >= 0 && ti < c); \
    } \
    BPG_BLOCK_REDUCE_ALL(total, cnt, oob) \
    if (BPG_THREAD0) { counted[0] = (T)cnt; bad[0] = (unsigned char)(oob != 0); } \
} \
/* gx = (softmax(x) - ((1 - ls) one_hot(t) + ls / c)) * scale, 0 on ignored rows; scale is \
   g[r] (reduction 0), g[0] (1), or g[0] / divisor (2), divisor read from count when count_on_device */ \
BPG_KERNEL bpg_ce_backward_##sfx(const T *g, const T *x, const i64 *t, T *gx, const T *count, i64 n, i64 c, \
                                 i64 ignore, T keep, T spread, int reduction, int count_on_device, T divisor) { \
    BPG_ROWS(r, n) { \
        const T *xr = x + r * c; \
        T *gr = gx + r * c; \
        i64 tr = t[r]; \
        if (tr == ignore) { BPG_LANES(j, c) gr[j] = (T)0; continue; } \
        T m = (T)BPG_NEG_INF; \
        BPG_LANES(j, c) m = BPG_MAXNAN(m, xr[j]); \
        BPG_WARP_ALL(m, BPG_MAXNAN) \
        T se = (T)0; \
        BPG_LANES(j, c) se += EXP(xr[j] - m); \
        BPG_WARP_ALL(se, BPG_ADD) \
        T scale = reduction == 0 ? g[r] : reduction == 1 ? g[0] : g[0] / (count_on_device ? count[0] : divisor); \
        BPG_LANES(j, c) { \
            T target = (T)(j == tr) * keep + spread; \
            gr[j] = (EXP(xr[j] - m) / se - target) * scale; \
        } \
    } \
}

BPG_KERNELS(float, f32, expf, logf)
BPG_KERNELS(double, f64, exp, log)
"""

# the block's reduction of the per-thread (total, cnt, oob) of the cross-entropy forward
BLOCK_REDUCE = r"""
#ifdef __CUDACC__
#define BPG_THREAD0 (threadIdx.x == 0)
#define BPG_BLOCK_REDUCE(total, cnt, oob) { \
    __shared__ double s_total[32]; __shared__ i64 s_cnt[32]; __shared__ int s_oob[32]; \
    int w_ = threadIdx.x / 32, nw_ = blockDim.x / 32; \
    if (BPG_LANE0) { s_total[w_] = total; s_cnt[w_] = cnt; s_oob[w_] = oob; } \
    __syncthreads(); \
    if (threadIdx.x == 0) { \
        for (int k_ = 1; k_ < nw_; ++k_) { total += s_total[k_]; cnt += s_cnt[k_]; oob |= s_oob[k_]; } \
    } \
}
/* every thread's values, not only the lanes 0: a warp's first, then the block's */
#define BPG_BLOCK_ITEMS(i, n) for (i64 i = threadIdx.x; i < (n); i += blockDim.x)
#define BPG_BLOCK_REDUCE_ALL(total, cnt, oob) \
    BPG_WARP_ALL(total, BPG_ADD) BPG_WARP_ALL(cnt, BPG_ADD) BPG_WARP_ALL(oob, BPG_OR) \
    BPG_BLOCK_REDUCE(total, cnt, oob)
#else
#define BPG_THREAD0 1
#define BPG_BLOCK_REDUCE(total, cnt, oob)
#define BPG_BLOCK_ITEMS(i, n) for (i64 i = 0; i < (n); ++i)
#define BPG_BLOCK_REDUCE_ALL(total, cnt, oob)
#endif
"""

SOURCE = PRELUDE + BLOCK_REDUCE + BODY


def kernel_name(kernel: str, dtype) -> str:
    """The ``extern "C"`` name of ``kernel`` ("relu", "bias_relu", "relu_backward",
    "relu_backward_colsum", "ce_forward", "ce_backward", "class_target_stats") for float32 or
    float64 (the dtype of its floating-point data; the count's for class_target_stats)."""
    return f"bpg_{kernel}_{_SUFFIX[np.dtype(dtype).name]}"


def _plain(*arrays) -> bool:
    """Whether the kernels take these arrays: float32 or float64, all one dtype, C-contiguous."""
    d = arrays[0].dtype
    return d.name in _SUFFIX and all(a.dtype == d and a.flags.c_contiguous for a in arrays)


class CudaNamespace(ArrayNamespace):
    """``xp`` (CuPy) plus the CUDA C kernels of :data:`SOURCE`; see the module docstring."""

    def __init__(self, backend):
        super().__init__(backend)
        self._functions: dict = {}  # (device id, kernel name) -> compiled function
        self._modules: dict = {}    # device id -> RawModule
        self._sm_count: dict = {}

    def _launch(self, name, like, grid_items, args, threads=THREADS, blocks=None):
        """Launch ``name`` on ``like``'s device (compiling the module there on first use) with
        enough blocks of ``threads`` to cover ``grid_items`` threads (at most 32 per SM), or
        ``blocks`` when given."""
        dev = like.device
        key = (dev.id, name)
        fn = self._functions.get(key)
        if fn is None:
            with dev:  # compiled and loaded on like's device, whichever is current
                mod = self._modules.get(dev.id)
                if mod is None:
                    mod = self._modules[dev.id] = self._xp.RawModule(code=SOURCE, options=OPTIONS)
                    self._sm_count[dev.id] = dev.attributes["MultiProcessorCount"]
                fn = self._functions[key] = mod.get_function(name)
        if blocks is None:
            blocks = max(1, min(-(-grid_items // threads), 32 * self._sm_count[dev.id]))
        with dev:
            fn((blocks,), (threads,), args)

    # -- ReLU ----------------------------------------------------------------------------
    def bias_relu_(self, y, b):
        if y.size == 0 or not y.ndim:
            return super().bias_relu_(y, b)
        if b is None:
            if _plain(y):
                self._launch(kernel_name("relu", y.dtype), y, y.size, (y, np.int64(y.size)))
                return y
        elif b.shape == y.shape[-1:] and _plain(y, b):
            self._launch(kernel_name("bias_relu", y.dtype), y, y.size,
                         (y, b, np.int64(y.size), np.int64(y.shape[-1])))
            return y
        return super().bias_relu_(y, b)

    def relu_backward(self, g, out):
        if g.shape == out.shape and g.size and _plain(g, out):
            res = self._xp.empty_like(g)
            self._launch(kernel_name("relu_backward", g.dtype), g, g.size, (g, out, res, np.int64(g.size)))
            return res
        return super().relu_backward(g, out)

    def _colsum(self, g, out, gb):
        m = g.shape[-1]
        rows = g.size // m if m else 0
        res = self._xp.empty_like(g)
        self._launch(kernel_name("relu_backward_colsum", g.dtype), g, m,
                     (g, out, res, gb, np.int64(rows), np.int64(m)))
        return res, gb

    def relu_backward_colsum(self, g, out):
        if g.ndim >= 1 and g.shape == out.shape and g.size and _plain(g, out):
            return self._colsum(g, out, self._xp.empty(g.shape[-1:], g.dtype))
        return super().relu_backward_colsum(g, out)

    def relu_backward_colsum_into(self, g, out, gb):
        if g.ndim >= 1 and g.shape == out.shape and gb.shape == g.shape[-1:] and g.size and _plain(g, out, gb):
            return self._colsum(g, out, gb)
        return super().relu_backward_colsum_into(g, out, gb)

    # -- cross-entropy -----------------------------------------------------------------------
    def class_target_stats(self, t, num_classes, ignore_index, count, bad):
        if not (t.ndim == 1 and t.dtype.kind in "iu" and count.shape == () and count.dtype.name in _SUFFIX
                and bad.shape == () and bad.dtype == np.bool_):
            return super().class_target_stats(t, num_classes, ignore_index, count, bad)
        self._launch(kernel_name("class_target_stats", count.dtype), t, CE_THREADS,
                     (self._targets(t), count, bad.view(np.uint8), np.int64(t.size), np.int64(num_classes),
                      np.int64(ignore_index)), threads=CE_THREADS, blocks=1)

    def _targets(self, t):
        """``t`` as contiguous int64 (the kernels' target type): a cast launch only when it is not."""
        if t.dtype != np.int64 or not t.flags.c_contiguous:
            t = self._xp.ascontiguousarray(t.astype(np.int64))
        return t

    def cross_entropy_forward(self, x, t, ignore_index, label_smoothing, reduction, count, stats=None):
        own = stats is not None and count is stats[0]
        if not (x.ndim == 2 and x.shape[1] and _plain(x) and (own or not hasattr(count, "shape"))
                and (stats is None or (stats[0].dtype == x.dtype and stats[1].dtype == np.bool_))):
            return super().cross_entropy_forward(x, t, ignore_index, label_smoothing, reduction, count, stats)
        xp, T = self._xp, x.dtype.type
        n, c = x.shape
        if stats is None:  # the kernel fills them whatever: scratch, allocated without a launch
            stats = (xp.empty((), x.dtype), xp.empty((), np.bool_))
        loss = xp.empty((n,) if reduction == "none" else (), x.dtype)
        ls = float(label_smoothing)
        self._launch(kernel_name("ce_forward", x.dtype), x, CE_THREADS,
                     (x, self._targets(t), loss, stats[0], stats[1].view(np.uint8), np.int64(n), np.int64(c),
                      np.int64(ignore_index), T(ls), T(1 - ls), np.int32(_REDUCTION[reduction]),
                      np.int32(own), T(1 if own else count)), threads=CE_THREADS, blocks=1)
        return loss

    def cross_entropy_backward(self, g, x, t, ignore_index, label_smoothing, reduction, count):
        on_device = hasattr(count, "shape")
        if not (x.ndim == 2 and _plain(x, g) and g.shape == ((x.shape[0],) if reduction == "none" else ())
                and (not on_device or (count.dtype == x.dtype and count.shape == ()))):
            return super().cross_entropy_backward(g, x, t, ignore_index, label_smoothing, reduction, count)
        T = x.dtype.type
        n, c = x.shape
        ls = float(label_smoothing)
        gx = self._xp.empty_like(x)
        self._launch(kernel_name("ce_backward", x.dtype), x, 32 * n,
                     (g, x, self._targets(t), gx, count if on_device else g, np.int64(n), np.int64(c),
                      np.int64(ignore_index), T(1 - ls), T(ls / c), np.int32(_REDUCTION[reduction]),
                      np.int32(on_device), T(1 if on_device or reduction != "mean" else count)))
        return gx


__all__ = ["CudaNamespace", "SOURCE", "kernel_name"]
