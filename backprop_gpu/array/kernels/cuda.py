"""The ``cupy`` backend's fused kernels of the hot ops: CUDA C compiled by NVRTC through CuPy.

:data:`SOURCE` states each kernel once, for float and double (``BPG_KERNELS(T, sfx)``), with the
contract of its reference in :mod:`.reference`. It is written so that the same text is also
plain C99: under ``__CUDACC__`` (NVRTC) a kernel's loops are spread over threads, warps and
blocks; otherwise (the host build the tests compare with NumPy, and the recording CuPy stand-in
runs) they are ordinary loops, and the warp and block reductions are no-ops.

* ``bpg_relu_<sfx>``, ``bpg_bias_relu_<sfx>``: ``y = max(y + b, 0)`` in place, one grid-stride pass.
* ``bpg_relu_backward_<sfx>``: ``g * (out > 0) * scale`` (``scale`` 1, or ``1 / (1 - p)`` after a fused dropout).
* ``bpg_relu_backward_colsum_<sfx>``: that, and its column sums (accumulated in double), one
  thread per column walking the rows: one launch for both.
* ``bpg_ce_forward_<sfx>``: the whole cross-entropy in one block (a warp per row: max, sum of
  exponentials, the target's logit and the smoothing mean; then the block sums the losses, the
  counted rows and the range check): one launch for loss, reduction, count and check.
* ``bpg_ce_backward_<sfx>``: ``(softmax - target) * scale`` per row, a warp per row: one launch.
* ``bpg_class_target_stats_<sfx>``: the counted targets and the range check of the other class
  losses (``nll_loss``, class weights), in one block: one launch.
* ``bpg_gelu_<sfx>``, ``bpg_gelu_backward_<sfx>``: GELU (exact, through erfc, or the tanh form) and
  its gradient, one grid-stride pass each.
* ``bpg_bn_stats_<sfx>``, ``bpg_bn_forward_<sfx>``, ``bpg_bn_backward_sums_<sfx>``,
  ``bpg_bn_backward_input_<sfx>`` (``BPG_BN_KERNELS``): batch normalisation over (N, C, ...) data,
  the fused ReLU included: the statistics a block per channel (one launch), the affine pass (one),
  and the backward's per-channel sums (with gw and gb; one) and the input's gradient (one).
* ``bpg_max_pool_<sfx>``: max pooling of (N, C, H, W) data, a thread per window (one launch);
  ``bpg_max_pool_backward_<sfx>``: each window's gradient added atomically at its first maximum
  (one launch after the zeros), or, with ``gather``, the input-shaped gradient read there (the
  backward's adjoint, for second order; one launch).
* ``bpg_scatter_add_rows_<sfx>``: rows of ``g`` added atomically into the rows an integer index
  names (an Embedding's gradient), one launch after the zeros.
* ``bpg_lstm_cell_<sfx>``, ``bpg_lstm_cell_backward_<sfx>``: one LSTM step after its products and its
  gradient, a thread per (row, hidden unit): one launch each (and a copy of a strided cell state).
* dropout (``dropout_``, ``dropout_backward``, ``bias_relu_dropout_``): the Philox module's kernels
  (:data:`backprop_gpu.array.rng.cuda_source.DROPOUT`: the draw, the compare and the scale in one
  launch, the mask kept as bytes; the backward one launch; after a bias and ReLU, all in one launch
  and no mask kept, its backward the ReLU's with the scale).
* ``bpg_softmax_<sfx>``, ``bpg_softmax_backward_<sfx>`` (``BPG_ROW_KERNELS``): softmax or
  log-softmax over the last axis and its gradient, a block per row (the block's max and sum
  through warp shuffles and shared memory): one launch each.
* ``bpg_layer_norm_<sfx>``: LayerNorm's output and each row's mean and 1/std, a block per row:
  one launch. ``bpg_layer_norm_backward_<sfx>``: the input's gradient, a block per row, and the
  weight's and bias's column sums of each block's rows into its row of a double scratch;
  ``bpg_layer_norm_colsums_<sfx>`` sums those rows: two launches, one without the column sums.

Python numbers are kernel arguments (NumPy scalars of the parameter's type), never 0-d device
arrays. Each backend's namespace compiles the module once per device on first use and keeps its
functions (CuPy caches the binary on disk as well). Arrays the kernels do not take (other
dtypes, non-contiguous layouts, a ``count`` array that is not the forward's own) go to the
reference. Nothing here touches CuPy at import time.
"""
from __future__ import annotations

import numpy as np

from ..namespace import ArrayNamespace
from ..rng import cupy_impl as rng_cupy
from ..rng.cuda_source import BIAS_RELU_DROPOUT_NAMES, DROPOUT_NAMES
from ..rng.scalar import PER_BLOCK
from .reference import GELU_APPROXIMATIONS, pool_out_size

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
BPG_KERNEL bpg_relu_backward_##sfx(const T *g, const T *out, T *res, i64 n, T scale) { \
    BPG_GRID(i, n) res[i] = g[i] * (T)(out[i] > (T)0) * scale; \
} \
BPG_KERNEL bpg_relu_backward_colsum_##sfx(const T *g, const T *out, T *res, T *colsum, i64 rows, i64 cols, \
                                           T scale) { \
    BPG_GRID(j, cols) { \
        double acc = 0.0; \
        for (i64 r = 0; r < rows; ++r) { \
            i64 k = r * cols + j; \
            T v = g[k] * (T)(out[k] > (T)0) * scale; \
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

# GELU, exact (Phi through erfc: no cancellation in the negative tail, unlike 1 + erf) or the tanh
# form (``tanh_form``), and its gradient; every constant cast to T, so float stays float
GELU = r"""
#define BPG_GELU_KERNELS(T, sfx, ERFC, EXP, TANH) \
BPG_KERNEL bpg_gelu_##sfx(const T *x, T *y, i64 n, int tanh_form) { \
    const T half = (T)0.5, one = (T)1, r2 = (T)0.70710678118654752, c = (T)0.79788456080286536, \
        k = (T)0.044715; \
    BPG_GRID(i, n) { \
        T v = x[i]; \
        y[i] = tanh_form ? half * v * (one + TANH(c * (v + k * v * v * v))) : v * (half * ERFC(-v * r2)); \
    } \
} \
BPG_KERNEL bpg_gelu_backward_##sfx(const T *g, const T *x, T *res, i64 n, int tanh_form) { \
    const T half = (T)0.5, one = (T)1, r2 = (T)0.70710678118654752, c = (T)0.79788456080286536, \
        k = (T)0.044715, k3 = (T)0.134145, rpi = (T)0.39894228040143268; \
    BPG_GRID(i, n) { \
        T v = x[i], d; \
        if (tanh_form) { \
            T t = TANH(c * (v + k * v * v * v)); \
            d = half * (one + t) + half * v * ((one - t * t) * c * (one + k3 * v * v)); \
        } else { \
            d = half * ERFC(-v * r2) + v * EXP(-half * v * v) * rpi; \
        } \
        res[i] = g[i] * d; \
    } \
}

BPG_GELU_KERNELS(float, f32, erfcf, expf, tanhf)
BPG_GELU_KERNELS(double, f64, erfc, exp, tanh)
"""

# -- softmax over the last axis and LayerNorm over rows: a block per row, the row's columns over
# the block's threads; every thread of a block walks the same rows, so all reach each reduction
ROWS_PRELUDE = r"""
#ifdef __CUDACC__
#define BPG_BLOCKS(p, n) for (i64 p = blockIdx.x; p < (n); p += gridDim.x)
#define BPG_THREAD_COLS(j, c) for (i64 j = threadIdx.x; j < (c); j += blockDim.x)
#define BPG_FIRST_THREAD (threadIdx.x == 0)
struct bpg_add { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct bpg_max { template <typename T> __device__ T operator()(T a, T b) const { return BPG_MAXNAN(a, b); } };
/* OP over the block's values, to every thread (blockDim.x a multiple of 32): the warps', then theirs */
template <typename T, typename Op> __device__ T bpg_block_all(T v, Op op) {
    __shared__ T part[32];
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();  /* the previous call's reads of part are done */
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    v = part[0];
    for (int k = 1; k < (int)(blockDim.x / 32); ++k) v = op(v, part[k]);
    return v;
}
#define BPG_BLOCK_SUM(v) v = bpg_block_all(v, bpg_add());
#define BPG_BLOCK_MAX(v) v = bpg_block_all(v, bpg_max());
#else
#define BPG_BLOCKS(p, n) for (i64 p = 0; p < (n); ++p)
#define BPG_THREAD_COLS(j, c) for (i64 j = 0; j < (c); ++j)
#define BPG_FIRST_THREAD 1
#define BPG_BLOCK_SUM(v)
#define BPG_BLOCK_MAX(v)
#endif
"""

ROWS_BODY = r"""
#define BPG_ROW_KERNELS(T, sfx, EXP, LOG, SQRT) \
/* softmax (log_ 0: e / sum(e), e = exp(x - max)) or log-softmax (1: (x - max) - log(sum(e))) per row */ \
BPG_KERNEL bpg_softmax_##sfx(const T *x, T *y, i64 rows, i64 c, int log_) { \
    BPG_BLOCKS(r, rows) { \
        const T *xr = x + r * c; \
        T *yr = y + r * c; \
        T m = (T)BPG_NEG_INF; \
        BPG_THREAD_COLS(j, c) m = BPG_MAXNAN(m, xr[j]); \
        BPG_BLOCK_MAX(m) \
        T s = (T)0; \
        BPG_THREAD_COLS(j, c) s += EXP(xr[j] - m); \
        BPG_BLOCK_SUM(s) \
        if (log_) { \
            T ls = LOG(s); \
            BPG_THREAD_COLS(j, c) yr[j] = (xr[j] - m) - ls; \
        } else { \
            BPG_THREAD_COLS(j, c) yr[j] = EXP(xr[j] - m) / s; \
        } \
    } \
} \
/* the gradient given the forward's out: out (g - sum(g out)), or g - exp(out) sum(g) (log_) */ \
BPG_KERNEL bpg_softmax_backward_##sfx(const T *g, const T *out, T *gx, i64 rows, i64 c, int log_) { \
    BPG_BLOCKS(r, rows) { \
        const T *gr = g + r * c, *orow = out + r * c; \
        T *res = gx + r * c; \
        T s = (T)0; \
        BPG_THREAD_COLS(j, c) s += log_ ? gr[j] : gr[j] * orow[j]; \
        BPG_BLOCK_SUM(s) \
        if (log_) { \
            BPG_THREAD_COLS(j, c) res[j] = gr[j] - EXP(orow[j]) * s; \
        } else { \
            BPG_THREAD_COLS(j, c) res[j] = orow[j] * (gr[j] - s); \
        } \
    } \
} \
/* y = (x - mean) rstd (* w) (+ b) per row, mean and rstd = 1 / sqrt(biased var + eps) kept */ \
BPG_KERNEL bpg_layer_norm_##sfx(const T *x, const T *w, const T *b, T *y, T *mean, T *rstd, i64 rows, i64 c, \
                                T eps, int has_w, int has_b) { \
    BPG_BLOCKS(r, rows) { \
        const T *xr = x + r * c; \
        T *yr = y + r * c; \
        T s = (T)0; \
        BPG_THREAD_COLS(j, c) s += xr[j]; \
        BPG_BLOCK_SUM(s) \
        T mu = s / (T)c; \
        T ss = (T)0; \
        BPG_THREAD_COLS(j, c) { T d = xr[j] - mu; ss += d * d; } \
        BPG_BLOCK_SUM(ss) \
        T rs = (T)1 / SQRT(ss / (T)c + eps); \
        if (BPG_FIRST_THREAD) { mean[r] = mu; rstd[r] = rs; } \
        BPG_THREAD_COLS(j, c) { \
            T v = (xr[j] - mu) * rs; \
            if (has_w) v = v * w[j]; \
            if (has_b) v = v + b[j]; \
            yr[j] = v; \
        } \
    } \
} \
/* gx = rstd (gy - mean(gy) - xhat mean(gy xhat)) per row (gy = g w; need_x); and (need_wb) the \
   column sums of g xhat and g over the rows r = p, p + parts, ... into row p of pw and pb (double), \
   each column's by one thread, so no two threads add into one slot */ \
BPG_KERNEL bpg_layer_norm_backward_##sfx(const T *g, const T *x, const T *mean, const T *rstd, const T *w, \
                                         T *gx, double *pw, double *pb, i64 rows, i64 c, i64 parts, int has_w, \
                                         int need_x, int need_wb) { \
    BPG_BLOCKS(p, parts) { \
        if (need_wb) BPG_THREAD_COLS(j, c) { pw[p * c + j] = 0.0; pb[p * c + j] = 0.0; } \
        for (i64 r = p; r < rows; r += parts) { \
            const T *gr = g + r * c, *xr = x + r * c; \
            T mu = mean[r], rs = rstd[r]; \
            T a1 = (T)0, a2 = (T)0; \
            if (need_x) { \
                T s1 = (T)0, s2 = (T)0; \
                BPG_THREAD_COLS(j, c) { \
                    T gy = has_w ? gr[j] * w[j] : gr[j]; \
                    s1 += gy; \
                    s2 += gy * ((xr[j] - mu) * rs); \
                } \
                BPG_BLOCK_SUM(s1) \
                BPG_BLOCK_SUM(s2) \
                a1 = s1 / (T)c; \
                a2 = s2 / (T)c; \
            } \
            BPG_THREAD_COLS(j, c) { \
                T xh = (xr[j] - mu) * rs; \
                if (need_x) gx[r * c + j] = rs * ((has_w ? gr[j] * w[j] : gr[j]) - a1 - xh * a2); \
                if (need_wb) { pw[p * c + j] += (double)(gr[j] * xh); pb[p * c + j] += (double)gr[j]; } \
            } \
        } \
    } \
} \
/* gw, gb = the column sums of the backward's parts rows of pw and pb (need_w, need_b) */ \
BPG_KERNEL bpg_layer_norm_colsums_##sfx(const double *pw, const double *pb, T *gw, T *gb, i64 parts, i64 c, \
                                        int need_w, int need_b) { \
    BPG_GRID(j, c) { \
        double acc_w = 0.0, acc_b = 0.0; \
        for (i64 p = 0; p < parts; ++p) { acc_w += pw[p * c + j]; acc_b += pb[p * c + j]; } \
        if (need_w) gw[j] = (T)acc_w; \
        if (need_b) gb[j] = (T)acc_b; \
    } \
}

BPG_ROW_KERNELS(float, f32, expf, logf, sqrtf)
BPG_ROW_KERNELS(double, f64, exp, log, sqrt)
"""

# -- batch normalisation of (N, C, S) data (S: the spatial positions, 1 for (N, C)): the per-channel
# reductions a block per channel (its N*S values over the block's threads, summed in double), the
# per-element passes grid-stride, each channel's constants read per element
BN_BODY = r"""
#define BPG_BN_AT(k, ch) ((((k) / s) * c + (ch)) * s + (k) % s)
#define BPG_BN_KERNELS(T, sfx) \
/* mean and biased variance per channel (about the double mean: no cancellation) */ \
BPG_KERNEL bpg_bn_stats_##sfx(const T *x, T *mean, T *var, i64 n, i64 c, i64 s) { \
    BPG_BLOCKS(ch, c) { \
        double acc = 0.0; \
        BPG_THREAD_COLS(k, n * s) acc += (double)x[BPG_BN_AT(k, ch)]; \
        BPG_BLOCK_SUM(acc) \
        double mu = acc / (double)(n * s); \
        double sq = 0.0; \
        BPG_THREAD_COLS(k, n * s) { double d = (double)x[BPG_BN_AT(k, ch)] - mu; sq += d * d; } \
        BPG_BLOCK_SUM(sq) \
        if (BPG_FIRST_THREAD) { mean[ch] = (T)mu; var[ch] = (T)(sq / (double)(n * s)); } \
    } \
} \
/* y = x scale + shift, scale = invstd (* w), shift = (b) - mean scale; then max(y, 0) if relu */ \
BPG_KERNEL bpg_bn_forward_##sfx(const T *x, const T *mean, const T *invstd, const T *w, const T *b, T *y, \
                                i64 total, i64 c, i64 s, int has_w, int has_b, int relu) { \
    BPG_GRID(i, total) { \
        i64 ch = (i / s) % c; \
        T scale = has_w ? invstd[ch] * w[ch] : invstd[ch]; \
        T shift = has_b ? b[ch] - mean[ch] * scale : -(mean[ch] * scale); \
        T v = x[i] * scale + shift; \
        y[i] = relu && !(v > (T)0 || v != v) ? (T)0 : v; \
    } \
} \
/* per channel: gb = sum(g), dotp = sum((x - mean) g) (g counted where out > 0 when masked, the \
   fused ReLU), kept in sums (double) for the input's gradient; gw = dotp invstd */ \
BPG_KERNEL bpg_bn_backward_sums_##sfx(const T *g, const T *x, const T *mean, const T *invstd, const T *out, \
                                      T *gw, T *gb, double *sums, i64 n, i64 c, i64 s, int masked) { \
    BPG_BLOCKS(ch, c) { \
        double sb = 0.0, sd = 0.0, mu = (double)mean[ch]; \
        BPG_THREAD_COLS(k, n * s) { \
            i64 i = BPG_BN_AT(k, ch); \
            double gv = masked && !(out[i] > (T)0) ? 0.0 : (double)g[i]; \
            sb += gv; \
            sd += ((double)x[i] - mu) * gv; \
        } \
        BPG_BLOCK_SUM(sb) \
        BPG_BLOCK_SUM(sd) \
        if (BPG_FIRST_THREAD) { \
            sums[2 * ch] = sb; \
            sums[2 * ch + 1] = sd; \
            gb[ch] = (T)sb; \
            gw[ch] = (T)(sd * (double)invstd[ch]); \
        } \
    } \
} \
/* gx = g scale - scale gb / per - (x - mean) scale invstd^2 dotp / per, per = N*S values a channel */ \
BPG_KERNEL bpg_bn_backward_input_##sfx(const T *g, const T *x, const T *mean, const T *invstd, const T *w, \
                                       const T *out, const double *sums, T *gx, i64 total, i64 c, i64 s, \
                                       int has_w, int masked) { \
    BPG_GRID(i, total) { \
        i64 ch = (i / s) % c; \
        T inv = invstd[ch]; \
        T scale = has_w ? inv * w[ch] : inv; \
        T per = (T)(total / c); \
        T k1 = scale * (T)sums[2 * ch] / per, k2 = scale * inv * inv * (T)sums[2 * ch + 1] / per; \
        T gv = masked && !(out[i] > (T)0) ? (T)0 : g[i]; \
        gx[i] = gv * scale - k1 - (x[i] - mean[ch]) * k2; \
    } \
}

BPG_BN_KERNELS(float, f32)
BPG_BN_KERNELS(double, f64)
"""

#: the row kernels' most threads per block (a row's columns over them)
ROW_THREADS = 256
#: LayerNorm's backward runs this many blocks per SM, each summing its rows' column sums into
#: its own row of the scratch parts
LN_PARTS_PER_SM = 4

# the gradient of rows gathered by integer index (an Embedding's, index_select's): g's rows added
# into out's rows idx (out zeroed first), one thread per element, atomically (double atomicAdd is
# sm_60 and later); negative indices wrap once, and out-of-range ones (checked on the device at the
# forward) are skipped. On the host build the atomic is a plain add.
SCATTER = r"""
#ifdef __CUDACC__
#define BPG_ATOMIC_ADD(p, v) atomicAdd((p), (v))
#else
#define BPG_ATOMIC_ADD(p, v) (*(p) += (v))
#endif
#define BPG_SCATTER_KERNELS(T, sfx) \
BPG_KERNEL bpg_scatter_add_rows_##sfx(const i64 *idx, const T *g, T *out, i64 n, i64 rows, i64 cols) { \
    BPG_GRID(i, n * cols) { \
        i64 r = idx[i / cols]; \
        if (r < 0) r += rows; \
        if (r >= 0 && r < rows) BPG_ATOMIC_ADD(out + r * cols + i % cols, g[i]); \
    } \
}

BPG_SCATTER_KERNELS(float, f32)
BPG_SCATTER_KERNELS(double, f64)
"""

# max pooling of (N, C, H, W) data, padded with -inf: a thread per output value walks its window in
# row-major order; the backward sends each window's g to its first maximum (a NaN counts as the
# maximum, as the reference's) with an atomic add, windows overlapping when stride < kernel
POOL = r"""
#define BPG_POOL_WINDOW(T) \
    i64 q = i % (ho * wo), nc = i / (ho * wo); \
    i64 r0 = (q / wo) * sh - ph, c0 = (q % wo) * sw - pw; \
    const T *xp = x + nc * h * w;
#define BPG_POOL_KERNELS(T, sfx) \
BPG_KERNEL bpg_max_pool_##sfx(const T *x, T *out, i64 total, i64 h, i64 w, i64 ho, i64 wo, i64 kh, i64 kw, \
                              i64 sh, i64 sw, i64 ph, i64 pw) { \
    BPG_GRID(i, total) { \
        BPG_POOL_WINDOW(T) \
        T m = (T)BPG_NEG_INF; \
        for (i64 a = 0; a < kh; ++a) for (i64 b = 0; b < kw; ++b) { \
            i64 r = r0 + a, cc = c0 + b; \
            if (r >= 0 && r < h && cc >= 0 && cc < w) m = BPG_MAXNAN(m, xp[r * w + cc]); \
        } \
        out[i] = m; \
    } \
} \
/* at: the flat index in x of window i's first maximum, -1 when that is in the padding */ \
BPG_KERNEL bpg_max_pool_backward_##sfx(const T *x, const T *out, const T *g, T *gx, i64 total, i64 h, i64 w, \
                                       i64 ho, i64 wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, \
                                       int gather) { \
    BPG_GRID(i, total) { \
        BPG_POOL_WINDOW(T) \
        T m = out[i]; \
        i64 at = -1; \
        int found = 0; \
        for (i64 a = 0; a < kh && !found; ++a) for (i64 b = 0; b < kw; ++b) { \
            i64 r = r0 + a, cc = c0 + b; \
            int inside = r >= 0 && r < h && cc >= 0 && cc < w; \
            T v = inside ? xp[r * w + cc] : (T)BPG_NEG_INF; \
            if (v == m || v != v) { at = inside ? nc * h * w + r * w + cc : -1; found = 1; break; } \
        } \
        if (gather) { \
            /* g here is the input-shaped gradient: its value at the first maximum, per window */ \
            gx[i] = at >= 0 ? g[at] : (T)0; \
        } else if (at >= 0) { \
            BPG_ATOMIC_ADD(gx + at, g[i]); \
        } \
    } \
}

BPG_POOL_KERNELS(float, f32)
BPG_POOL_KERNELS(double, f64)
"""

# one LSTM step after its products, and its gradient (the reference's lstm_cell_ and
# lstm_cell_backward), a thread per (row, hidden unit); the previous cell state contiguous
LSTM = r"""
#define BPG_LSTM_KERNELS(T, sfx, EXP, TANH) \
BPG_KERNEL bpg_lstm_cell_##sfx(const T *a, const T *c, T *out, i64 n, i64 h) { \
    const T one = (T)1; \
    BPG_GRID(k, n * h) { \
        i64 r = k / h, j = k % h; \
        const T *ar = a + r * 4 * h; \
        T *o = out + r * 6 * h; \
        T ig = one / (one + EXP(-ar[j])), fg = one / (one + EXP(-ar[h + j])); \
        T gg = TANH(ar[2 * h + j]), og = one / (one + EXP(-ar[3 * h + j])); \
        T cn = fg * c[k] + ig * gg; \
        o[j] = og * TANH(cn); \
        o[h + j] = cn; \
        o[2 * h + j] = ig; o[3 * h + j] = fg; o[4 * h + j] = gg; o[5 * h + j] = og; \
    } \
} \
BPG_KERNEL bpg_lstm_cell_backward_##sfx(const T *g, const T *dhr, const T *dcr, int has_rec, const T *out, \
                                        const T *cp, T *da, T *dcn, i64 n, i64 h) { \
    const T one = (T)1; \
    BPG_GRID(k, n * h) { \
        i64 r = k / h, j = k % h; \
        const T *gr = g + r * 6 * h, *o = out + r * 6 * h; \
        T *d = da + r * 4 * h; \
        T dh = has_rec ? gr[j] + dhr[k] : gr[j]; \
        T ig = o[2 * h + j], fg = o[3 * h + j], gg = o[4 * h + j], og = o[5 * h + j]; \
        T tc = TANH(o[h + j]); \
        T dc = (has_rec ? gr[h + j] + dcr[k] : gr[h + j]) + dh * og * (one - tc * tc); \
        d[j] = (dc * gg + gr[2 * h + j]) * ig * (one - ig); \
        d[h + j] = (dc * cp[k] + gr[3 * h + j]) * fg * (one - fg); \
        d[2 * h + j] = (dc * ig + gr[4 * h + j]) * (one - gg * gg); \
        d[3 * h + j] = (dh * tc + gr[5 * h + j]) * og * (one - og); \
        dcn[k] = dc * fg; \
    } \
}

BPG_LSTM_KERNELS(float, f32, expf, tanhf)
BPG_LSTM_KERNELS(double, f64, exp, tanh)
"""

SOURCE = PRELUDE + BLOCK_REDUCE + BODY + GELU + ROWS_PRELUDE + ROWS_BODY + BN_BODY + SCATTER + POOL + LSTM


def kernel_name(kernel: str, dtype) -> str:
    """The ``extern "C"`` name of ``kernel`` ("relu", "bias_relu", "relu_backward",
    "relu_backward_colsum", "ce_forward", "ce_backward", "class_target_stats", "gelu",
    "gelu_backward", "scatter_add_rows") for float32 or
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

    def _sms(self, like) -> int:
        """The number of SMs of ``like``'s device."""
        dev = like.device
        if dev.id not in self._sm_count:
            self._sm_count[dev.id] = dev.attributes["MultiProcessorCount"]
        return self._sm_count[dev.id]

    def _rows_launch(self, name, like, blocks, cols, args):
        """Launch a row kernel on ``blocks`` blocks (at most 32 per SM) of a warp per 32 of its
        ``cols`` columns, up to :data:`ROW_THREADS` threads."""
        threads = min(ROW_THREADS, 32 * max(1, -(-cols // 32)))
        self._launch(name, like, blocks * threads, args, threads=threads)

    # -- softmax over the last axis; LayerNorm over rows -------------------------------------------
    def _rows_softmax(self, x, log):
        if x.ndim and not x.size:  # nothing to compute, in any dtype
            return self._xp.empty_like(x)
        if not (x.ndim and _plain(x)):
            return super()._rows_softmax(x, log)
        c = x.shape[-1]
        y = self._xp.empty_like(x)
        self._rows_launch(kernel_name("softmax", x.dtype), x, x.size // c, c,
                          (x, y, np.int64(x.size // c), np.int64(c), np.int32(log)))
        return y

    def _rows_softmax_backward(self, g, out, log):
        if not (g.ndim and g.shape == out.shape):
            return super()._rows_softmax_backward(g, out, log)
        if not g.size:
            return self._xp.empty_like(g)
        if not _plain(g, out):
            return super()._rows_softmax_backward(g, out, log)
        c = g.shape[-1]
        gx = self._xp.empty_like(g)
        self._rows_launch(kernel_name("softmax_backward", g.dtype), g, g.size // c, c,
                          (g, out, gx, np.int64(g.size // c), np.int64(c), np.int32(log)))
        return gx

    def layer_norm_forward(self, x, w, b, eps, mean, rstd):
        wb = [a for a in (w, b) if a is not None]
        if not (x.ndim == 2 and x.size and _plain(x, mean, rstd, *wb) and all(a.shape == x.shape[1:] for a in wb)):
            return super().layer_norm_forward(x, w, b, eps, mean, rstd)
        n, c = x.shape
        y = self._xp.empty_like(x)
        self._rows_launch(kernel_name("layer_norm", x.dtype), x, n, c,
                          (x, x if w is None else w, x if b is None else b, y, mean, rstd, np.int64(n), np.int64(c),
                           x.dtype.type(eps), np.int32(w is not None), np.int32(b is not None)))
        return y

    def layer_norm_backward(self, g, x, mean, rstd, w, needs=(True, True, True)):
        wl = [] if w is None else [w]
        if not (x.ndim == 2 and x.size and g.shape == x.shape and _plain(g, x, mean, rstd, *wl)
                and all(a.shape == x.shape[1:] for a in wl)):
            return super().layer_norm_backward(g, x, mean, rstd, w, needs)
        xp = self._xp
        n, c = x.shape
        need_wb = bool(needs[1] or needs[2])
        # with column sums, a block per part (several rows each); without, a block per row
        parts = min(n, LN_PARTS_PER_SM * self._sms(x)) if need_wb else n
        with x.device:  # scratch, allocated without a launch (the kernel zeroes its rows first)
            pw, pb = (xp.empty((parts, c) if need_wb else 1, np.float64) for _ in range(2))
        gx = xp.empty_like(x) if needs[0] else None
        self._rows_launch(kernel_name("layer_norm_backward", x.dtype), x, parts, c,
                          (g, x, mean, rstd, x if w is None else w, g if gx is None else gx, pw, pb, np.int64(n),
                           np.int64(c), np.int64(parts), np.int32(w is not None), np.int32(bool(needs[0])),
                           np.int32(need_wb)))
        gw = gb = None
        if need_wb:
            gw = xp.empty(c, x.dtype) if needs[1] else None
            gb = xp.empty(c, x.dtype) if needs[2] else None
            self._launch(kernel_name("layer_norm_colsums", x.dtype), x, c,
                         (pw, pb, x if gw is None else gw, x if gb is None else gb, np.int64(parts), np.int64(c),
                          np.int32(bool(needs[1])), np.int32(bool(needs[2]))))
        return gx, gw, gb

    # -- max pooling -------------------------------------------------------------------------------
    def _pool_args(self, x, kernel, stride, padding, n_out):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo = pool_out_size(*x.shape[2:], kernel, stride, padding)
        return [np.int64(v) for v in (n_out, *x.shape[2:], ho, wo, kh, kw, sh, sw, ph, pw)]

    def max_pool2d(self, x, kernel, stride, padding):
        if not (x.ndim == 4 and x.size and _plain(x)):
            return super().max_pool2d(x, kernel, stride, padding)
        out = self._xp.empty(x.shape[:2] + pool_out_size(*x.shape[2:], kernel, stride, padding), x.dtype)
        if out.size:
            self._launch(kernel_name("max_pool", x.dtype), x, out.size,
                         (x, out, *self._pool_args(x, kernel, stride, padding, out.size)))
        return out

    def _first_max(self, grad, res, x, out, kernel, stride, padding, gather):
        """The backward kernel: window gradients scattered to each window's first maximum into
        ``res`` (zeros), or (``gather``) an input-shaped gradient read there into ``res``."""
        self._launch(kernel_name("max_pool_backward", x.dtype), x, out.size,
                     (x, out, grad, res, *self._pool_args(x, kernel, stride, padding, out.size), np.int32(gather)))
        return res

    def max_pool2d_backward(self, g, x, out, kernel, stride, padding):
        if not (x.ndim == 4 and x.size and out.size and g.shape == out.shape and _plain(x, out, g)):
            return super().max_pool2d_backward(g, x, out, kernel, stride, padding)
        return self._first_max(g, self._xp.zeros_like(x), x, out, kernel, stride, padding, False)

    def max_pool2d_gather(self, gx, x, out, kernel, stride, padding):
        if not (x.ndim == 4 and x.size and out.size and gx.shape == x.shape and _plain(x, out, gx)):
            return super().max_pool2d_gather(gx, x, out, kernel, stride, padding)
        return self._first_max(gx, self._xp.empty_like(out), x, out, kernel, stride, padding, True)

    # -- batch normalisation ------------------------------------------------------------------------
    @staticmethod
    def _ncs(x):
        """(N, C, S) of (N, C, ...) data."""
        n, c = x.shape[:2]
        return n, c, x.size // (n * c) if n * c else 0

    def batch_norm_stats(self, x):
        if not (x.ndim >= 2 and x.size and _plain(x)):
            return super().batch_norm_stats(x)
        n, c, s = self._ncs(x)
        mean, var = (self._xp.empty(c, x.dtype) for _ in range(2))
        self._rows_launch(kernel_name("bn_stats", x.dtype), x, c, n * s,
                          (x, mean, var, np.int64(n), np.int64(c), np.int64(s)))
        return mean, var

    def batch_norm_forward(self, x, mean, invstd, w, b, relu=False):
        wb = [a for a in (w, b) if a is not None]
        if not (x.ndim >= 2 and x.size and _plain(x, mean, invstd, *wb)
                and all(a.shape == (x.shape[1],) for a in (mean, invstd, *wb))):
            return super().batch_norm_forward(x, mean, invstd, w, b, relu)
        n, c, s = self._ncs(x)
        y = self._xp.empty_like(x)
        self._launch(kernel_name("bn_forward", x.dtype), x, x.size,
                     (x, mean, invstd, x if w is None else w, x if b is None else b, y, np.int64(x.size),
                      np.int64(c), np.int64(s), np.int32(w is not None), np.int32(b is not None), np.int32(relu)))
        return y

    def batch_norm_backward(self, g, x, mean, invstd, w, needs=(True, True, True), eps=None, out=None):
        extra = [a for a in (w, out) if a is not None]
        if not (x.ndim >= 2 and x.size and g.shape == x.shape and (out is None or out.shape == x.shape)
                and _plain(g, x, mean, invstd, *extra)
                and all(a.shape == (x.shape[1],) for a in (mean, invstd) + (() if w is None else (w,)))):
            return super().batch_norm_backward(g, x, mean, invstd, w, needs, eps, out)
        xp = self._xp
        n, c, s = self._ncs(x)
        with x.device:  # allocations, no launches: every entry is written by the kernels
            sums = xp.empty(2 * c, np.float64)
            gw, gb = xp.empty(c, x.dtype), xp.empty(c, x.dtype)
        masked = np.int32(out is not None)
        o = x if out is None else out
        self._rows_launch(kernel_name("bn_backward_sums", x.dtype), x, c, n * s,
                          (g, x, mean, invstd, o, gw, gb, sums, np.int64(n), np.int64(c), np.int64(s), masked))
        gx = None
        if needs[0]:
            gx = xp.empty_like(x)
            self._launch(kernel_name("bn_backward_input", x.dtype), x, x.size,
                         (g, x, mean, invstd, x if w is None else w, o, sums, gx, np.int64(x.size), np.int64(c),
                          np.int64(s), np.int32(w is not None), masked))
        return gx, (gw if needs[1] else None), (gb if needs[2] else None)

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

    def relu_backward(self, g, out, scale=1.0):
        if g.shape == out.shape and g.size and _plain(g, out):
            res = self._xp.empty_like(g)
            self._launch(kernel_name("relu_backward", g.dtype), g, g.size,
                         (g, out, res, np.int64(g.size), g.dtype.type(scale)))
            return res
        return super().relu_backward(g, out, scale)

    def _colsum(self, g, out, gb, scale):
        m = g.shape[-1]
        rows = g.size // m if m else 0
        res = self._xp.empty_like(g)
        self._launch(kernel_name("relu_backward_colsum", g.dtype), g, m,
                     (g, out, res, gb, np.int64(rows), np.int64(m), g.dtype.type(scale)))
        return res, gb

    def relu_backward_colsum(self, g, out, scale=1.0):
        if g.ndim >= 1 and g.shape == out.shape and g.size and _plain(g, out):
            return self._colsum(g, out, self._xp.empty(g.shape[-1:], g.dtype), scale)
        return super().relu_backward_colsum(g, out, scale)

    def relu_backward_colsum_into(self, g, out, gb, scale=1.0):
        if g.ndim >= 1 and g.shape == out.shape and gb.shape == g.shape[-1:] and g.size and _plain(g, out, gb):
            return self._colsum(g, out, gb, scale)
        return super().relu_backward_colsum_into(g, out, gb, scale)

    # -- GELU --------------------------------------------------------------------------------------
    def gelu_forward(self, x, approximate="none"):
        if x.size and approximate in GELU_APPROXIMATIONS and _plain(x):
            y = self._xp.empty_like(x)
            self._launch(kernel_name("gelu", x.dtype), x, x.size,
                         (x, y, np.int64(x.size), np.int32(approximate == "tanh")))
            return y
        return super().gelu_forward(x, approximate)

    def gelu_backward(self, g, x, approximate="none"):
        if g.shape == x.shape and x.size and approximate in GELU_APPROXIMATIONS and _plain(g, x):
            res = self._xp.empty_like(x)
            self._launch(kernel_name("gelu_backward", x.dtype), x, x.size,
                         (g, x, res, np.int64(x.size), np.int32(approximate == "tanh")))
            return res
        return super().gelu_backward(g, x, approximate)

    # -- the gradient of gathered rows -----------------------------------------------------------
    def index_backward(self, g, shape, key, out=None):
        # one integer array along the first axis (an Embedding's gradient): zeros, then one
        # atomic scatter-add launch (cupyx.scatter_add would process the index on its own first)
        k = key[0] if type(key) is tuple and len(key) == 1 else key
        if isinstance(k, self._xp.ndarray) and k.dtype.kind in "iu" and len(shape) >= 1 and g.size \
                and g.shape == k.shape + tuple(shape[1:]) and _plain(g) and (out is None or _plain(out, g)):
            if out is None:
                out = self._xp.zeros(shape, g.dtype)
            else:
                out.fill(0)
            cols = g.size // k.size
            self._launch(kernel_name("scatter_add_rows", g.dtype), g, g.size,
                         (self._targets(k.reshape(-1)), g, out, np.int64(k.size), np.int64(shape[0]), np.int64(cols)))
            return out
        return super().index_backward(g, shape, key, out)

    # -- the LSTM cell -------------------------------------------------------------------------------
    def lstm_cell_(self, a, c, out):
        if c.ndim == 2 and c.size and a.shape == (c.shape[0], 4 * c.shape[1]) \
                and out.shape == (c.shape[0], 6 * c.shape[1]) and _plain(a, out) and c.dtype == a.dtype:
            c = c if c.flags.c_contiguous else self._xp.ascontiguousarray(c)  # the step before's slice: a copy
            self._launch(kernel_name("lstm_cell", a.dtype), a, c.size,
                         (a, c, out, np.int64(c.shape[0]), np.int64(c.shape[1])))
            return out
        return super().lstm_cell_(a, c, out)

    def lstm_cell_backward(self, g, dh_rec, dc_rec, out, c_prev):
        xp = self._xp
        rec = dh_rec is not None and dc_rec is not None
        if c_prev.ndim == 2 and c_prev.size and g.shape == out.shape == (c_prev.shape[0], 6 * c_prev.shape[1]) \
                and _plain(g, out) and c_prev.dtype == g.dtype \
                and (not rec or (_plain(g, dh_rec, dc_rec) and dh_rec.shape == dc_rec.shape == c_prev.shape)) \
                and (dh_rec is None) == (dc_rec is None):
            cp = c_prev if c_prev.flags.c_contiguous else xp.ascontiguousarray(c_prev)
            da = xp.empty((cp.shape[0], 4 * cp.shape[1]), g.dtype)
            dcn = xp.empty_like(cp)
            self._launch(kernel_name("lstm_cell_backward", g.dtype), g, cp.size,
                         (g, dh_rec if rec else dcn, dc_rec if rec else dcn, np.int32(rec), out, cp, da, dcn,
                          np.int64(cp.shape[0]), np.int64(cp.shape[1])))
            return da, dcn
        return super().lstm_cell_backward(g, dh_rec, dc_rec, out, c_prev)

    # -- dropout: the Philox module's fused kernels (array/rng/cuda_source.DROPOUT) -------------------
    def dropout_(self, x, p, keep):
        if not (x.size and x.dtype.name in DROPOUT_NAMES and keep.dtype == np.bool_ and keep.shape == x.shape
                and _plain(x) and keep.flags.c_contiguous):
            return super().dropout_(x, p, keep)
        b, T = self._backend, x.dtype.type
        kind, draw_args = b.bernoulli_draw(p, x.dtype, "dropout")
        k0, k1, offset = b.generator.take(kind, x.size)
        y = self._xp.empty_like(x)
        rng_cupy.launch(DROPOUT_NAMES[x.dtype.name][0], x, -(-x.size // PER_BLOCK[kind]),
                        (x, y, keep.view(np.uint8), np.int64(x.size), k0, k1, offset, *draw_args, T(1 / (1 - p))))
        return y

    def bias_relu_dropout_(self, y, b, p):
        if not (y.ndim and y.size and y.dtype.name in BIAS_RELU_DROPOUT_NAMES and _plain(y)
                and (b is None or (b.shape == y.shape[-1:] and _plain(y, b)))):
            return super().bias_relu_dropout_(y, b, p)
        bk, T = self._backend, y.dtype.type
        kind, draw_args = bk.bernoulli_draw(p, y.dtype, "dropout")
        k0, k1, offset = bk.generator.take(kind, y.size)
        rng_cupy.launch(BIAS_RELU_DROPOUT_NAMES[y.dtype.name], y, -(-y.size // PER_BLOCK[kind]),
                        (y, y if b is None else b, np.int64(y.size), np.int64(y.shape[-1]), np.int32(b is not None),
                         k0, k1, offset, *draw_args, T(1 / (1 - p))))
        return y

    def dropout_backward(self, g, keep, p):
        if not (g.size and g.dtype.name in DROPOUT_NAMES and keep.shape == g.shape and keep.dtype == np.bool_
                and _plain(g) and keep.flags.c_contiguous):
            return super().dropout_backward(g, keep, p)
        res = self._xp.empty_like(g)
        rng_cupy.launch(DROPOUT_NAMES[g.dtype.name][1], g, g.size,
                        (g, keep.view(np.uint8), res, np.int64(g.size), g.dtype.type(1 / (1 - p))))
        return res

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
