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

``p``, ``g`` and the states are 1-D contiguous arrays of one dtype (float32 or
float64) on the target's device; ``step`` counts from 1. Hypers may be Python
floats: every kernel casts them to ``dtype``.
"""
from __future__ import annotations

import numpy as np

_cache: dict = {}


def get_kernel(target: str, rule_name: str, flags: tuple, dtype, masked: bool = False):
    """The compiled kernel for one optimizer variant on one target (cached).

    ``target``: "numpy", "numba", "numba-cuda" or "cupy"; ``flags``: ``rules.get(rule_name).flags(group)``;
    ``dtype``: anything ``np.dtype`` takes. ``masked``: the kernel takes a last argument, a uint8
    array as long as ``p``, and leaves the elements where it is 0 (and their states) untouched.
    """
    key = (target, rule_name, tuple(flags), np.dtype(dtype).str, bool(masked))
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
        k = _cache[key] = build(rule_name, tuple(flags), np.dtype(dtype), bool(masked))
    return k
