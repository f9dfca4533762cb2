"""Parameter dtypes the fused optimizer kernels take, and the half-precision codecs.

float32 and float64 parameters are updated in their own dtype. float16 and
bfloat16 (``ml_dtypes.bfloat16``) parameters have float32 master weights: the
step is computed in float32 from the master, which it updates, and the
parameter is stored as the master rounded to nearest, ties to even, in the same
pass. Unlike torch's fused kernels on 16-bit tensors, their optimizer state
stays float32 too (:func:`compute_dtype`), so neither the weights nor the
moments lose bits every step. Any other dtype (integers, complex, non-native byte order) is refused
with a TypeError naming it; flat buffers are made in native byte order, so a
big-endian parameter never reaches a kernel.

The codecs work on the 16 bits of a value held as an unsigned integer (the
kernels view float16/bfloat16 buffers as uint16), so Numba's CPU target, which
has no float16, and bfloat16, which no compiler here knows, take the same path.
:func:`codecs` writes them once over two bit-cast primitives that each target
supplies; ``cuda_source.CODEC_C`` is the same logic in C for the CUDA C target.
The rounding matches NumPy's ``astype(float16)`` and ``ml_dtypes``'
``astype(bfloat16)`` bit for bit; a NaN becomes the quiet NaN of its sign
(tests/test_optim_dtypes.py checks every float16 and bfloat16 pattern, every
rounding tie and a sample of float32 bit patterns).
"""
from __future__ import annotations

import numpy as np

#: parameter dtypes (by name) computed in float32 and stored rounded to nearest even
LOW_PRECISION = ("float16", "bfloat16")
#: parameter dtypes (by name) the kernels take
SUPPORTED = LOW_PRECISION + ("float32", "float64")


def native(dtype) -> np.dtype:
    """``dtype`` in this machine's byte order (flat buffers are made in it)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def compute_dtype(dtype) -> np.dtype:
    """The dtype a kernel computes in and keeps optimizer state in for parameters of ``dtype``:
    float32 for float16 and bfloat16, the dtype itself for float32 and float64.

    Raises TypeError, naming the dtype, for any other dtype or a non-native byte order.
    """
    dtype = np.dtype(dtype)
    if dtype.name not in SUPPORTED or (dtype.name == "bfloat16" and dtype.itemsize != 2):
        raise TypeError(f"the fused optimizer kernels take float16, bfloat16, float32 and float64 parameters, "
                        f"not {dtype} (kind {dtype.kind!r})")
    if not dtype.isnative:
        raise TypeError(f"the fused optimizer kernels take native byte order; got {dtype.str} ({dtype.name}); "
                        f"convert with .astype({dtype.name!r}) first")
    return np.dtype(np.float32) if dtype.name in LOW_PRECISION else dtype


def is_low_precision(dtype) -> bool:
    """Whether parameters of ``dtype`` are stored in 16 bits and computed in float32."""
    return np.dtype(dtype).name in LOW_PRECISION


def codecs(as_float, as_bits):
    """``{"float16": (load, store), "bfloat16": (load, store)}`` as plain Python functions.

    ``load(h)`` turns 16 bits (an unsigned integer) into a float32; ``store(x)`` rounds a float32 to
    nearest even and returns its 16 bits as a uint16. ``as_float(u)`` reinterprets the 32 bits of an
    unsigned integer as a float32 and ``as_bits(x)`` a float32 as a uint32: the only target-specific
    parts. Every intermediate that is used stays in [0, 2**32), so Numba's int64 arithmetic and NumPy's
    uint32 scalars (the CUDA simulator) give the same bits. The two float32 operations are exact or
    round exactly as intended, and never see a subnormal that matters, so flush-to-zero (CuPy's
    ``-ftz=true``) changes nothing.
    """
    def f16_load(h):
        u = np.uint32(h)
        o = ((u & 0x7FFF) << 13) + 0x38000000  # exponent and mantissa in place, rebiased by 127 - 15
        e = u & 0x7C00
        sign = (u & 0x8000) << 16
        if e == 0x7C00:  # inf or NaN: the exponent all ones
            return as_float(sign | (o + 0x38000000))
        if e == 0:  # zero or subnormal: renormalise through an exact float32 subtraction of 2**-14
            return as_float(sign | as_bits(as_float(o + 0x00800000) - np.float32(6.103515625e-05)))
        return as_float(sign | o)

    def f16_store(x):
        u = as_bits(x)
        sign = (u >> 16) & 0x8000
        a = u & 0x7FFFFFFF
        # conditional expressions, evaluated lazily in Python and as selects once compiled: the loop
        # stays branch-free (twice as fast as branches on random data)
        return np.uint16(sign | (
            (0x7E00 if a > 0x7F800000 else 0x7C00) if a >= 0x47800000 else  # NaN, inf, beyond 65520
            # subnormal or zero: adding 0.5 (ulp 2**-24) rounds to nearest even at float16's subnormal step
            as_bits(as_float(a) + np.float32(0.5)) - 0x3F000000 if a < 0x38800000 else
            # normal: rebias, add 0xFFF plus the kept bit's parity (ties to even), drop 13 bits; a carry
            # into the exponent is right, up to inf (the 2**28 offset keeps the sum positive)
            ((a + ((a >> 13) & 1) + 0x08000FFF) >> 13) - 0x20000))

    def bf16_load(h):
        return as_float(np.uint32(h) << 16)

    def bf16_store(x):
        u = as_bits(x)
        if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: the quiet NaN of its sign, as ml_dtypes
            return np.uint16(((u >> 16) & 0x8000) | 0x7FC0)
        return np.uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)

    return {"float16": (f16_load, f16_store), "bfloat16": (bf16_load, bf16_store)}


def numpy_as_float(u):
    """The bit cast for NumPy scalars (Numba's CPU target compiles the same call)."""
    return np.uint32(u).view(np.float32)


def numpy_as_bits(x):
    return np.float32(x).view(np.uint32)
