"""Fused optimizer kernels: one in-place pass over flat arrays per step.

``get_kernel(target, rule, flags, dtype)`` returns ``kernel(p, g, states, hypers)``
for target ``numpy`` (the reference), ``numba`` (CPU ``prange`` loop),
``numba-cuda`` (grid-stride CUDA kernel; the simulator on CPU-only machines)
or ``cupy`` (CUDA C generated from the rules by ``cuda_source``). Kernels are built once per
(target, rule, flags, dtype) and cached.

The call, for a rule ``r = rules.get(name)`` and a param group ``group``::

    flags = r.flags(group)
    kernel = get_kernel(target, name, flags, p.dtype)
    kernel(p, g, tuple(state[n] for n in r.state_names(flags)), r.hypers(group, step, flags))

``p`` and ``g`` are 1-D contiguous arrays of the parameters' dtype (float16,
bfloat16, float32 or float64, native byte order) on the target's device, the
states 1-D arrays of ``precision.compute_dtype(dtype)`` (float32 for the 16-bit
dtypes: those are computed in float32 and stored rounded to nearest even, see
:mod:`.precision`); ``step`` counts from 1. Hypers may be Python floats: every
kernel casts them to the compute dtype. Any other dtype is a TypeError naming it.
"""
from __future__ import annotations

import numpy as np

from .precision import compute_dtype

_cache: dict = {}


def get_kernel(target: str, rule_name: str, flags: tuple, dtype, masked: bool = False):
    """The compiled kernel for one optimizer variant on one target (cached).

    ``target``: "numpy", "numba", "numba-cuda" or "cupy"; ``flags``: ``rules.get(rule_name).flags(group)``;
    ``dtype``: the parameters' dtype, anything ``np.dtype`` takes (TypeError, before anything is
    built, for one the kernels cannot take). ``masked``: the kernel takes a last argument, a uint8
    array as long as ``p``, and leaves the elements where it is 0 (and their states) untouched.
    """
    dtype = np.dtype(dtype)
    key = (target, rule_name, tuple(flags), dtype, bool(masked))
    k = _cache.get(key)
    if k is None:
        if target == "numpy":
            from .numpy_impl import build
        elif target == "numba":
            from .numba_cpu import build
        elif target == "numba-cuda":
            from .numba_cuda import build
        elif target == "cupy":
            from .cupy_impl import build
        else:
            raise ValueError(f"unknown kernel target {target!r}")
        compute_dtype(dtype)  # TypeError for a dtype no target takes
        k = _cache[key] = build(rule_name, tuple(flags), dtype, bool(masked))
    return k
