"""The Philox kernels' per-block values and loops, written once for Numba's CPU and CUDA targets.

:func:`make` compiles the value functions with a given decorator:
``numba.njit(inline="always")`` for :mod:`.numba_cpu`,
``numba.cuda.jit(device=True, inline="always")`` for :mod:`.numba_cuda` (under the
simulator they run as Python on NumPy scalars). Each computes block ``j`` of a
draw, the counter ``offset + j``, and returns the elements that block gives
(:mod:`.philox` states which); :func:`loop_source` is the loop around them that
stores those elements, serial or grid-stride. Every integer is a
uint64 below 2**32 or a product of two such, so nothing wraps except the
counter, as in the reference; mixing in a signed int would make Numba promote to
float64, hence the typed constants.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from . import philox as P

_U = np.uint64
M0, M1, W0, W1 = _U(P.M0), _U(P.M1), _U(P.W0), _U(P.W1)
MASK, S32, S5, S6, ZERO = _U(P.MASK32), _U(32), _U(5), _U(6), _U(0)
INV53 = 1.0 / 9007199254740992.0
TWO_PI = P.TWO_PI


def _philox(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 of the counter (c0, c1, c2, c3) and key (k0, k1), all uint64 below 2**32."""
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = (p1 >> S32) ^ c1 ^ k0, p1 & MASK, (p0 >> S32) ^ c3 ^ k1, p0 & MASK
        k0 = (k0 + W0) & MASK  # bumped once more after the last round too: unused, harmless
        k1 = (k1 + W1) & MASK
    return c0, c1, c2, c3


def _u53(a, b):
    return (np.float64(a >> S5) * 67108864.0 + np.float64(b >> S6)) * INV53


def _mulhi64(x, span):
    a_hi = x >> S32
    a_lo = x & MASK
    b_hi = span >> S32
    b_lo = span & MASK
    hi_lo = a_hi * b_lo
    cross = ((a_lo * b_lo) >> S32) + (hi_lo & MASK) + a_lo * b_hi
    return a_hi * b_hi + (hi_lo >> S32) + (cross >> S32)


def make(jit) -> SimpleNamespace:
    """The per-block value functions compiled with ``jit`` (a device-function decorator): each
    ``f(j, k0, k1, offset, *extra)`` returns the :data:`PER_BLOCK` elements block ``j`` gives."""
    philox, u53, mulhi64 = jit(_philox), jit(_u53), jit(_mulhi64)

    @jit
    def block(ctr, k0, k1):  # the stream's counter (lo32(ctr), hi32(ctr), 0, 0)
        return philox(ctr & MASK, ctr >> S32, ZERO, ZERO, k0, k1)

    @jit
    def uniform32(j, k0, k1, offset, shift, scale):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return (np.float32(w0 >> shift) * scale, np.float32(w1 >> shift) * scale,
                np.float32(w2 >> shift) * scale, np.float32(w3 >> shift) * scale)

    @jit
    def uniform64(j, k0, k1, offset):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return u53(w0, w1), u53(w2, w3)

    @jit
    def normal(j, k0, k1, offset):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        r = math.sqrt(-2.0 * math.log(1.0 - u53(w0, w1)))
        t = TWO_PI * u53(w2, w3)
        return r * math.cos(t), r * math.sin(t)

    @jit
    def bernoulli32(j, k0, k1, offset, shift, scale, p):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return (np.uint8(np.float32(w0 >> shift) * scale < p), np.uint8(np.float32(w1 >> shift) * scale < p),
                np.uint8(np.float32(w2 >> shift) * scale < p), np.uint8(np.float32(w3 >> shift) * scale < p))

    @jit
    def bernoulli64(j, k0, k1, offset, p):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return np.uint8(u53(w0, w1) < p), np.uint8(u53(w2, w3) < p)

    @jit
    def randint32(j, k0, k1, offset, low, span):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return (low + np.int64((w0 * span) >> S32), low + np.int64((w1 * span) >> S32),
                low + np.int64((w2 * span) >> S32), low + np.int64((w3 * span) >> S32))

    @jit
    def randint64(j, k0, k1, offset, low, span):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        return low + np.int64(mulhi64((w0 << S32) | w1, span)), low + np.int64(mulhi64((w2 << S32) | w3, span))

    @jit
    def perm_keys(j, k0, k1, offset, shift):
        w0, w1, w2, w3 = block(offset + _U(j), k0, k1)
        i = _U(2 * j)
        return ((((w0 << S32) | w1) >> shift << shift) | i, (((w2 << S32) | w3) >> shift << shift) | (i + _U(1)))

    return SimpleNamespace(uniform32=uniform32, uniform64=uniform64, normal=normal, bernoulli32=bernoulli32,
                           bernoulli64=bernoulli64, randint32=randint32, randint64=randint64, perm_keys=perm_keys)


def loop_source(per: int, extra: tuple, head: str, blocks: str, tail_if: str) -> str:
    """Python source of ``loop(out, k0, k1, offset, *extra)`` filling ``out`` from ``values`` (one of
    :func:`make`'s functions): the full blocks over ``blocks`` (a range expression of ``nfull``; ``head``
    sets up what it reads) with unconditional stores, which the CPU compiler schedules much better
    (1.9 ms against 3.5 ms for 2**20 float32 on one core), then the partial last block where
    ``tail_if`` holds (it reads ``rest``, the elements left)."""
    args = "".join(f", {a}" for a in extra)
    full = "\n".join(f"        out[{per} * j + {l}] = v[{l}]" for l in range(per))
    tail = "\n".join(f"        if rest > {l}:\n            out[{per} * nfull + {l}] = v[{l}]" for l in range(per))
    return (f"def loop(out, k0, k1, offset{args}):\n"
            f"    n = out.shape[0]\n    nfull = n // {per}\n    rest = n - {per} * nfull\n"
            + "".join(f"    {line}\n" for line in head.splitlines())
            + f"    for j in {blocks}:\n        v = values(j, k0, k1, offset{args})\n{full}\n"
            + f"    if {tail_if}:\n        v = values(nfull, k0, k1, offset{args})\n{tail}\n")


#: the draws by name, and how many elements one block gives (a draw of n uses ceil(n / that) blocks)
PER_BLOCK = {"uniform32": 4, "uniform64": 2, "normal": 2, "bernoulli32": 4, "bernoulli64": 2,
             "randint32": 4, "randint64": 2, "perm_keys": 2}
#: each draw's arguments after (k0, k1, offset): shift, span uint64; scale float32; low int64;
#: p float32 (bernoulli32) or float64 (bernoulli64)
EXTRA = {"uniform32": ("shift", "scale"), "uniform64": (), "normal": (), "bernoulli32": ("shift", "scale", "p"),
         "bernoulli64": ("p",), "randint32": ("low", "span"), "randint64": ("low", "span"), "perm_keys": ("shift",)}
