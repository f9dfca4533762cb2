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
:mod:`.precision`; their ``states`` end with one more, the float32 master
weights); ``step`` counts from 1. Hypers may be Python floats: every
kernel casts them to the compute dtype. Any other dtype is a TypeError naming it.

The device-scalar form, ``get_kernel(..., device=True)``, is
``kernel(p, g, states, consts, scalars[, mask])``: ``consts`` are
``r.consts(group)`` (kernel arguments) and ``scalars`` the four 1-element
device arrays of ``codegen.DEVICE_SCALARS`` (float64 ``lr`` and ``step``, the
count before this step; float32 ``inv_scale`` and ``found_inf``). The kernel
skips everything when ``found_inf`` is set, computes the hypers from ``lr`` and
``step + 1`` itself and multiplies each gradient by ``inv_scale``; it leaves
``step`` alone (the optimizer adds one after the launch). Capturable optimizers
and ``GradScaler`` steps use it, so no host value enters their steps.

``get_check(target, dtype)`` is the found-inf check launch:
``check(g, found_inf)`` sets the 1-element float32 ``found_inf`` to 1 if any
element of the flat gradient ``g`` is inf or NaN (``rules.nonfinite``), and
never clears it.
"""
from __future__ import annotations

import numpy as np

from .precision import compute_dtype

_cache: dict = {}


def _target_module(target: str):
    if target == "numpy":
        from . import numpy_impl as m
    elif target == "numba":
        from . import numba_cpu as m
    elif target == "numba-cuda":
        from . import numba_cuda as m
    elif target == "cupy":
        from . import cupy_impl as m
    else:
        raise ValueError(f"unknown kernel target {target!r}")
    return m


def get_kernel(target: str, rule_name: str, flags: tuple, dtype, masked: bool = False, device: bool = False):
    """The compiled kernel for one optimizer variant on one target (cached).

    ``target``: "numpy", "numba", "numba-cuda" or "cupy"; ``flags``: ``rules.get(rule_name).flags(group)``;
    ``dtype``: the parameters' dtype, anything ``np.dtype`` takes (TypeError, before anything is
    built, for one the kernels cannot take). ``masked``: the kernel takes a last argument, a uint8
    array as long as ``p``, and leaves the elements where it is 0 (and their states) untouched.
    ``device``: the device-scalar form (see the module docstring).
    """
    dtype = np.dtype(dtype)
    key = (target, rule_name, tuple(flags), dtype, bool(masked), bool(device))
    k = _cache.get(key)
    if k is None:
        build = _target_module(target).build
        compute_dtype(dtype)  # TypeError for a dtype no target takes
        k = _cache[key] = build(rule_name, tuple(flags), dtype, bool(masked), bool(device))
    return k


def get_check(target: str, dtype):
    """The found-inf check launch ``check(g, found_inf)`` for gradients of ``dtype`` on ``target`` (cached)."""
    dtype = np.dtype(dtype)
    key = (target, "nonfinite check", dtype)
    k = _cache.get(key)
    if k is None:
        build_check = _target_module(target).build_check
        compute_dtype(dtype)
        k = _cache[key] = build_check(dtype)
    return k
