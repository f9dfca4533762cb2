"""Philox-4x32-10 and the distributions drawn from it: the NumPy reference.

Every backend's kernels (:mod:`.numba_cpu`, :mod:`.numba_cuda`, the CUDA C of
:mod:`.cuda_source`) follow exactly this statement; ``tests/array/test_philox.py``
checks them against it bit for bit.

The block function
------------------
Philox-4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
as 1, 2, 3", SC 2011; Random123) maps a 128-bit counter ``(c0, c1, c2, c3)`` and a
64-bit key ``(k0, k1)`` to four 32-bit words. Each of its 10 rounds is::

    hi0:lo0 = 0xD2511F53 * c0        hi1:lo1 = 0xCD9E8D57 * c2      (32 x 32 -> 64 bits)
    (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    (k0, k1) += (0x9E3779B9, 0xBB67AE85)                              (mod 2**32, between rounds)

Here the products are taken in uint64 arrays (exact, as both factors are below 2**32).

The stream
----------
* key: the 64-bit seed, ``k0 = seed & 0xFFFFFFFF``, ``k1 = seed >> 32``;
* a generator's state is ``(seed, offset)``: ``offset`` is a 64-bit count of the
  128-bit blocks drawn so far;
* a draw of ``b`` blocks at ``offset`` evaluates the counters
  ``(lo32(offset + j), hi32(offset + j), 0, 0)`` for ``j = 0 .. b-1`` (mod 2**64),
  and afterwards ``offset += b``. Word ``w`` of the draw is word ``w % 4`` of block
  ``w // 4``. So draws are reproducible from the state alone, in any order of
  evaluation, and on any device.

Distributions (element ``i`` of a draw of ``n``)
------------------------------------------------
* ``uniform(bits)``, for a float with a ``bits``-bit significand (24: float32, 11:
  float16, 8: bfloat16): word ``u = w[i]``, value ``(u >> (32 - bits)) * 2**-bits``,
  computed in float32 (exact) and then cast (exact). ``ceil(n / 4)`` blocks.
* ``uniform64``: words ``a = w[2i]``, ``b = w[2i+1]``, value
  ``((a >> 5) * 2**26 + (b >> 6)) * 2**-53`` in float64 (exact: 53 random bits).
  ``ceil(n / 2)`` blocks. Both uniforms are multiples of ``2**-bits`` in [0, 1).
* ``normal``: Box-Muller on block ``k = i // 2``: ``u1`` from words ``(4k, 4k+1)``
  and ``u2`` from ``(4k+2, 4k+3)`` as in ``uniform64``; ``r = sqrt(-2 log(1 - u1))``,
  ``t = 2 pi u2`` (in float64, ``2 pi`` rounded to float64), element ``2k`` is
  ``r cos t`` and ``2k+1`` is ``r sin t``, rounded once to the output dtype.
  ``1 - u1`` is in (0, 1], so the log is finite. ``ceil(n / 2)`` blocks. ``log``,
  ``cos`` and ``sin`` are each device's own (libm, libdevice), so normals agree
  across backends to an ulp or so, not bit for bit.
* ``bernoulli(bits, p)``: ``uniform(bits) < p`` (``uniform64`` when ``bits == 53``),
  ``p`` rounded to the same float first, so the mask is what comparing the two in
  that float gives. Blocks as the uniform's.
* ``randint(low, span)`` for ``span = high - low`` in [1, 2**63]: Lemire's
  multiply-shift without rejection. ``span <= 2**32``: ``low + (w[i] * span >> 32)``,
  one word, ``ceil(n / 4)`` blocks. Larger spans: the 64-bit word
  ``x = w[2i] << 32 | w[2i+1]``, ``low + (x * span >> 64)``, ``ceil(n / 2)`` blocks.
  Each value then has probability ``floor(2**B / span)`` or ``ceil(2**B / span)``
  over ``2**B`` (B = 32 or 64): a relative bias below ``span / 2**B`` (none when
  ``span`` is a power of two). That buys a fixed number of words per element, the
  stream layout above, and no branches.
* ``randperm(n)``: 64-bit keys ``x_i`` (as for large-span randint), their low
  ``s = bit_length(n - 1)`` bits replaced by ``i``: ``key_i = (x_i >> s << s) | i``.
  The permutation is ``argsort(key)``. Keys are distinct, so every sort gives the
  same answer, and equal random parts are ordered by index (a stable tie-break;
  they occur with probability about ``n**2 / 2**(65 - s)``). ``ceil(n / 2)`` blocks.
"""
from __future__ import annotations

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # key increments (golden ratio, sqrt(3) - 1)
ROUNDS = 10
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
TWO_PI = 6.283185307179586  # 2 pi rounded to float64, the factor every backend uses
#: the largest randint span (high - low) the kernels take
MAX_SPAN = 1 << 63


def philox4x32_10(ctr, key):
    """The Philox-4x32-10 block function, vectorised: ``ctr`` four equal-shape arrays (or ints)
    of 32-bit values, ``key`` two; returns four uint32 arrays of that shape."""
    m0, m1, mask = np.uint64(M0), np.uint64(M1), np.uint64(MASK32)
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in ctr)
    k0, k1 = (np.uint64(int(k) & MASK32) for k in key)
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + np.uint64(W0)) & mask, (k1 + np.uint64(W1)) & mask
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & mask
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def key_of(seed: int) -> tuple[int, int]:
    """The Philox key of a 64-bit seed: (low 32 bits, high 32 bits)."""
    return seed & MASK32, (seed >> 32) & MASK32


def words(seed: int, offset: int, blocks: int) -> np.ndarray:
    """The ``4 * blocks`` uint32 words of a draw of ``blocks`` blocks at ``offset``, in stream order."""
    j = (np.uint64(offset) + np.arange(blocks, dtype=np.uint64))  # wraps mod 2**64
    ctr = (j & np.uint64(MASK32), j >> np.uint64(32), 0, 0)
    return np.stack(philox4x32_10(ctr, key_of(seed)), axis=1).reshape(-1)


def _blocks(n: int, per_block: int) -> int:
    return -(-n // per_block)


# -- blocks each distribution consumes: one statement, read by the generator for every backend ---------

def uniform_blocks(n: int, bits: int) -> int:
    return _blocks(n, 2 if bits == 53 else 4)


def normal_blocks(n: int) -> int:
    return _blocks(n, 2)


def randint_blocks(n: int, span: int) -> int:
    return _blocks(n, 4 if span <= 1 << 32 else 2)


def perm_blocks(n: int) -> int:
    return _blocks(n, 2)


# -- the distributions ------------------------------------------------------------------------

def _u53(a, b):
    return ((a >> np.uint32(5)).astype(np.float64) * 67108864.0 + (b >> np.uint32(6))) * (1.0 / 9007199254740992.0)


def uniform(seed: int, offset: int, n: int, bits: int = 24) -> np.ndarray:
    """``n`` uniforms in [0, 1): float32 multiples of ``2**-bits`` (``bits`` <= 24), or float64 with 53 bits."""
    w = words(seed, offset, uniform_blocks(n, bits))
    if bits == 53:
        return _u53(w[0::2], w[1::2])[:n]
    if not 1 <= bits <= 24:
        raise ValueError(f"uniform: bits must be 1..24 or 53, got {bits}")
    return (w[:n] >> np.uint32(32 - bits)).astype(np.float32) * np.float32(2.0 ** -bits)


def normal(seed: int, offset: int, n: int, dtype=np.float32) -> np.ndarray:
    """``n`` standard normals (Box-Muller in float64, rounded once to ``dtype``)."""
    w = words(seed, offset, normal_blocks(n)).reshape(-1, 4)
    u1, u2 = _u53(w[:, 0], w[:, 1]), _u53(w[:, 2], w[:, 3])
    r = np.sqrt(-2.0 * np.log(1.0 - u1))
    t = TWO_PI * u2
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1).reshape(-1)[:n].astype(dtype)


def bernoulli(seed: int, offset: int, n: int, p: float, bits: int = 24) -> np.ndarray:
    """``n`` booleans, True where ``uniform(bits) < p`` (``p`` as already rounded to that float)."""
    return uniform(seed, offset, n, bits) < p


def _mulhi64(x, span: int):
    """``x * span >> 64`` for uint64 ``x`` and ``span < 2**64``, from 32-bit halves (no uint128)."""
    lo32, s32 = np.uint64(MASK32), np.uint64(32)
    a_hi, a_lo = x >> s32, x & lo32
    b_hi, b_lo = np.uint64(span >> 32), np.uint64(span & MASK32)
    hi_lo = a_hi * b_lo
    cross = ((a_lo * b_lo) >> s32) + (hi_lo & lo32) + a_lo * b_hi  # at most 2**64 - 1: no wrap
    return a_hi * b_hi + (hi_lo >> s32) + (cross >> s32)


def randint(seed: int, offset: int, n: int, low: int, span: int) -> np.ndarray:
    """``n`` int64 values in [low, low + span), by multiply-shift (see the module notes for its bias)."""
    if not 1 <= span <= MAX_SPAN:
        raise ValueError(f"randint: the span high - low must be 1 .. 2**63, got {span}")
    w = words(seed, offset, randint_blocks(n, span)).astype(np.uint64)
    if span <= 1 << 32:
        m = (w[:n] * np.uint64(span)) >> np.uint64(32)
    else:
        m = _mulhi64((w[0::2] << np.uint64(32) | w[1::2])[:n], span)
    return np.int64(low) + m.astype(np.int64)  # m < span <= 2**63 and the sum is in [low, high): no wrap


def perm_shift(n: int) -> int:
    """How many low key bits hold the index in :func:`perm_keys`."""
    return max(int(n) - 1, 0).bit_length()


def perm_keys(seed: int, offset: int, n: int) -> np.ndarray:
    """The ``n`` distinct uint64 sort keys of :func:`randperm`."""
    w = words(seed, offset, perm_blocks(n)).astype(np.uint64)
    x = (w[0::2] << np.uint64(32) | w[1::2])[:n]
    s = np.uint64(perm_shift(n))
    return (x >> s << s) | np.arange(n, dtype=np.uint64)


def randperm(seed: int, offset: int, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` (int64): the argsort of :func:`perm_keys`."""
    return np.argsort(perm_keys(seed, offset, n), kind="stable").astype(np.int64)
