"""The ``numpy`` target: the reference (:mod:`.philox`), vectorised NumPy, behind the kernels' interface."""
from __future__ import annotations

import numpy as np

from . import philox as P


def run(kind: str, out, k0, k1, offset, *args) -> None:
    """Fill the 1-D NumPy array ``out`` with draw ``kind`` at ``offset`` (arguments as the kernels take them)."""
    seed, offset, n = int(k0) | int(k1) << 32, int(offset), out.shape[0]
    if kind == "uniform32":
        shift, _ = args
        out[...] = P.uniform(seed, offset, n, 32 - int(shift))
    elif kind == "uniform64":
        out[...] = P.uniform(seed, offset, n, 53)
    elif kind == "normal":
        out[...] = P.normal(seed, offset, n, out.dtype)
    elif kind == "bernoulli32":
        shift, _, p = args
        out[...] = P.bernoulli(seed, offset, n, np.float32(p), 32 - int(shift))
    elif kind == "bernoulli64":
        out[...] = P.bernoulli(seed, offset, n, np.float64(args[0]), 53)
    elif kind in ("randint32", "randint64"):
        low, span = args
        out[...] = P.randint(seed, offset, n, int(low), int(span))
    elif kind == "perm_keys":
        out[...] = P.perm_keys(seed, offset, n)
    else:
        raise ValueError(f"unknown Philox draw {kind!r}")
