"""The ``cupy`` target's Philox kernels as CUDA C, and the same C built for the host.

:data:`SOURCE` holds one ``extern "C"`` kernel per draw of :mod:`.philox` (one
thread per Philox block, grid-stride), written against a few macros so that
:func:`host_source` is the very same text as plain C99 loops over the blocks:
``tests/array/test_philox.py`` compiles the CUDA with NVRTC under CuPy's options
and builds the host C with the system compiler to compare it, bit for bit, with
the NumPy reference. Every kernel takes ``(out, n, k0, k1, offset, ...)``:
``n`` elements, the key words and the block offset as 64-bit unsigned, then the
arguments named in :data:`.scalar.EXTRA`. ``normal`` comes as ``philox_normal_f32``
and ``philox_normal_f64`` (computed in double, rounded once on the store).
"""
from __future__ import annotations

from . import scalar

PRELUDE_CUDA = r"""
#define RNG_DEV static __device__ __forceinline__
#define RNG_KERNEL extern "C" __global__ void
#define RNG_BLOCKS(j, nb) for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < (nb); \
                               j += (u64)blockDim.x * gridDim.x)
"""

PRELUDE_HOST = r"""
#include <math.h>
#define RNG_DEV static inline
#define RNG_KERNEL void
#define RNG_BLOCKS(j, nb) for (u64 j = 0; j < (nb); ++j)
"""

BODY = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

/* Philox-4x32-10 of the counter (lo32(ctr), hi32(ctr), 0, 0) and the key (k0, k1) */
RNG_DEV void philox_block(u64 ctr, u64 key0, u64 key1, u32 w[4]) {
    u32 c0 = (u32)ctr, c1 = (u32)(ctr >> 32), c2 = 0, c3 = 0, k0 = (u32)key0, k1 = (u32)key1;
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u64 p0 = (u64)0xD2511F53u * c0, p1 = (u64)0xCD9E8D57u * c2;
        u32 n0 = (u32)(p1 >> 32) ^ c1 ^ k0, n2 = (u32)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (u32)p1; c2 = n2; c3 = (u32)p0;
    }
    w[0] = c0; w[1] = c1; w[2] = c2; w[3] = c3;
}

/* 53 random bits in [0, 1): exact in double, so FMA contraction cannot change it */
RNG_DEV double u53(u32 a, u32 b) {
    return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) * (1.0 / 9007199254740992.0);
}

/* x * span >> 64 from 32-bit halves (no partial sum wraps) */
RNG_DEV u64 mulhi64(u64 x, u64 span) {
    u64 a_hi = x >> 32, a_lo = x & 0xFFFFFFFFull, b_hi = span >> 32, b_lo = span & 0xFFFFFFFFull;
    u64 hi_lo = a_hi * b_lo;
    u64 cross = ((a_lo * b_lo) >> 32) + (hi_lo & 0xFFFFFFFFull) + a_lo * b_hi;
    return a_hi * b_hi + (hi_lo >> 32) + (cross >> 32);
}

RNG_KERNEL philox_uniform32(float *out, i64 n, u64 k0, u64 k1, u64 offset, u64 shift, float scale) {
    RNG_BLOCKS(j, ((u64)n + 3) / 4) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 4; ++l) {
            u64 i = 4 * j + l;
            if (i < (u64)n) out[i] = (float)(w[l] >> shift) * scale;
        }
    }
}

RNG_KERNEL philox_uniform64(double *out, i64 n, u64 k0, u64 k1, u64 offset) {
    RNG_BLOCKS(j, ((u64)n + 1) / 2) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 2; ++l) {
            u64 i = 2 * j + l;
            if (i < (u64)n) out[i] = u53(w[2 * l], w[2 * l + 1]);
        }
    }
}

#define NORMAL_KERNEL(name, T) \
RNG_KERNEL name(T *out, i64 n, u64 k0, u64 k1, u64 offset) { \
    RNG_BLOCKS(j, ((u64)n + 1) / 2) { \
        u32 w[4]; \
        philox_block(offset + j, k0, k1, w); \
        double r = sqrt(-2.0 * log(1.0 - u53(w[0], w[1]))); \
        double t = 6.283185307179586 * u53(w[2], w[3]); \
        if (2 * j < (u64)n) out[2 * j] = (T)(r * cos(t)); \
        if (2 * j + 1 < (u64)n) out[2 * j + 1] = (T)(r * sin(t)); \
    } \
}
NORMAL_KERNEL(philox_normal_f32, float)
NORMAL_KERNEL(philox_normal_f64, double)

RNG_KERNEL philox_bernoulli32(unsigned char *out, i64 n, u64 k0, u64 k1, u64 offset, u64 shift, float scale,
                              float p) {
    RNG_BLOCKS(j, ((u64)n + 3) / 4) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 4; ++l) {
            u64 i = 4 * j + l;
            if (i < (u64)n) out[i] = (float)(w[l] >> shift) * scale < p;
        }
    }
}

RNG_KERNEL philox_bernoulli64(unsigned char *out, i64 n, u64 k0, u64 k1, u64 offset, double p) {
    RNG_BLOCKS(j, ((u64)n + 1) / 2) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 2; ++l) {
            u64 i = 2 * j + l;
            if (i < (u64)n) out[i] = u53(w[2 * l], w[2 * l + 1]) < p;
        }
    }
}

RNG_KERNEL philox_randint32(i64 *out, i64 n, u64 k0, u64 k1, u64 offset, i64 low, u64 span) {
    RNG_BLOCKS(j, ((u64)n + 3) / 4) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 4; ++l) {
            u64 i = 4 * j + l;
            if (i < (u64)n) out[i] = low + (i64)(((u64)w[l] * span) >> 32);
        }
    }
}

RNG_KERNEL philox_randint64(i64 *out, i64 n, u64 k0, u64 k1, u64 offset, i64 low, u64 span) {
    RNG_BLOCKS(j, ((u64)n + 1) / 2) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 2; ++l) {
            u64 i = 2 * j + l;
            if (i < (u64)n) out[i] = low + (i64)mulhi64(((u64)w[2 * l] << 32) | w[2 * l + 1], span);
        }
    }
}

RNG_KERNEL philox_perm_keys(u64 *out, i64 n, u64 k0, u64 k1, u64 offset, u64 shift) {
    RNG_BLOCKS(j, ((u64)n + 1) / 2) {
        u32 w[4];
        philox_block(offset + j, k0, k1, w);
        for (int l = 0; l < 2; ++l) {
            u64 i = 2 * j + l;
            if (i < (u64)n) out[i] = (((((u64)w[2 * l] << 32) | w[2 * l + 1]) >> shift) << shift) | i;
        }
    }
}
"""

#: dropout in one pass: the Bernoulli(p) mask that ``bernoulli32`` / ``bernoulli64`` draw at the
#: same offset, inverted (kept where uniform >= p) and stored as bytes for the backward, and
#: ``y = x * (kept ? scale : 0)``; its backward ``g * (kept ? scale : 0)``. float32 data draws as
#: ``bernoulli32`` with 24 bits, float64 as ``bernoulli64``.
DROPOUT = r"""
/* BODY once per element i < n, with kept = whether the Bernoulli(p) draw keeps it: the draws of
   bernoulli32 (4 per Philox block, a 24-bit uniform) or bernoulli64 (2 per block, u53) */
#define DROPOUT_DRAWS32(BODY) \
    RNG_BLOCKS(j, ((u64)n + 3) / 4) { \
        u32 w[4]; \
        philox_block(offset + j, k0, k1, w); \
        for (int l = 0; l < 4; ++l) { \
            u64 i = 4 * j + l; \
            if (i < (u64)n) { const int kept = !((float)(w[l] >> shift) * uscale < p); BODY } \
        } \
    }
#define DROPOUT_DRAWS64(BODY) \
    RNG_BLOCKS(j, ((u64)n + 1) / 2) { \
        u32 w[4]; \
        philox_block(offset + j, k0, k1, w); \
        for (int l = 0; l < 2; ++l) { \
            u64 i = 2 * j + l; \
            if (i < (u64)n) { const int kept = !(u53(w[2 * l], w[2 * l + 1]) < p); BODY } \
        } \
    }
/* y = x * (kept ? scale : 0), the mask kept as bytes for the backward */
#define DROPOUT_BODY(T) keep[i] = (unsigned char)kept; y[i] = x[i] * (kept ? scale : (T)0);
/* relu(y + b) (b over the last axis of cols, when with_bias), then dropped in place: no mask kept (the
   output is positive exactly where both passed) */
#define BIAS_RELU_DROPOUT_BODY(T) { \
    T v = with_bias ? y[i] + b[i % (u64)cols] : y[i]; \
    v = v > (T)0 || v != v ? v : (T)0; \
    y[i] = v * (kept ? scale : (T)0); }

RNG_KERNEL philox_dropout_f32(const float *x, float *y, unsigned char *keep, i64 n, u64 k0, u64 k1, u64 offset,
                              u64 shift, float uscale, float p, float scale) {
    DROPOUT_DRAWS32(DROPOUT_BODY(float))
}

RNG_KERNEL philox_dropout_f64(const double *x, double *y, unsigned char *keep, i64 n, u64 k0, u64 k1, u64 offset,
                              double p, double scale) {
    DROPOUT_DRAWS64(DROPOUT_BODY(double))
}

RNG_KERNEL philox_bias_relu_dropout_f32(float *y, const float *b, i64 n, i64 cols, int with_bias, u64 k0,
                                        u64 k1, u64 offset, u64 shift, float uscale, float p, float scale) {
    DROPOUT_DRAWS32(BIAS_RELU_DROPOUT_BODY(float))
}

RNG_KERNEL philox_bias_relu_dropout_f64(double *y, const double *b, i64 n, i64 cols, int with_bias, u64 k0,
                                        u64 k1, u64 offset, double p, double scale) {
    DROPOUT_DRAWS64(BIAS_RELU_DROPOUT_BODY(double))
}

#define DROPOUT_BACKWARD(name, T) \
RNG_KERNEL name(const T *g, const unsigned char *keep, T *res, i64 n, T scale) { \
    RNG_BLOCKS(i, (u64)n) res[i] = g[i] * (keep[i] ? scale : (T)0); \
}
DROPOUT_BACKWARD(philox_dropout_backward_f32, float)
DROPOUT_BACKWARD(philox_dropout_backward_f64, double)
"""

#: the CUDA C of every kernel (one module), as CuPy's RawModule compiles it
SOURCE = PRELUDE_CUDA + BODY + DROPOUT


def kernel_name(kind: str, out_dtype=None) -> str:
    """The C name of draw ``kind``'s kernel (``normal`` by its output dtype, float32 or float64)."""
    if kind == "normal":
        return "philox_normal_" + {"float32": "f32", "float64": "f64"}[str(out_dtype)]
    if kind not in scalar.PER_BLOCK:
        raise ValueError(f"unknown Philox draw {kind!r}; expected one of {', '.join(scalar.PER_BLOCK)}")
    return "philox_" + kind


#: every kernel name in SOURCE
KERNEL_NAMES = tuple(kernel_name(k, d) for k in scalar.PER_BLOCK
                     for d in (("float32", "float64") if k == "normal" else (None,)))


#: the dropout kernels in SOURCE, by the data's dtype: (forward, backward)
DROPOUT_NAMES = {"float32": ("philox_dropout_f32", "philox_dropout_backward_f32"),
                 "float64": ("philox_dropout_f64", "philox_dropout_backward_f64")}
#: the bias + ReLU + dropout kernels in SOURCE, by the data's dtype
BIAS_RELU_DROPOUT_NAMES = {"float32": "philox_bias_relu_dropout_f32", "float64": "philox_bias_relu_dropout_f64"}


def host_source() -> str:
    """The same kernels as C99 functions looping over every block (for the host compiler)."""
    return PRELUDE_HOST + BODY + DROPOUT
