"""CuPy target: CUDA C generated from the rules (:mod:`.cuda_source`), compiled by NVRTC.

Each variant and dtype is its own ``extern "C"`` kernel taking ``p, g``, the
states the variant keeps, ``n`` and the rule's hypers; one grid-stride launch
covers a whole flat buffer. Kernels are compiled on first use for each device
(then cached here and in CuPy's on-disk kernel cache). Nothing here touches
CuPy at import time, so this module imports on machines without CuPy or a GPU.
"""
from __future__ import annotations

import numpy as np

from . import rules
from .cuda_source import check_source, kernel_source
from .precision import compute_dtype, is_low_precision

THREADS = 256
OPTIONS = ("--std=c++14",)

_kernels: dict = {}
_sm_count: dict = {}


def _cupy():
    """The ``cupy`` module, or a RuntimeError saying why the cupy target cannot run here."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("the cupy optimizer kernels need CuPy (pip install 'backprop_gpu[gpu]')") from e
    if not cupy.is_available():
        raise RuntimeError("the cupy optimizer kernels need a CUDA GPU and driver; cupy.is_available() is False")
    return cupy


def _kernel(cupy, rule_name, flags, dtype, device, masked, scalars=False):
    key = (rule_name, flags, dtype.name, device.id, masked, scalars)
    k = _kernels.get(key)
    if k is None:
        name, src = check_source(dtype) if rule_name is None else kernel_source(rule_name, flags, dtype, masked,
                                                                                 scalars)
        k = _kernels[key] = cupy.RawKernel(src, name, options=OPTIONS)
    return k


def _blocks(n, device):
    """ceil(n / THREADS) blocks, at most 32 per SM of ``device``."""
    sms = _sm_count.get(device.id)
    if sms is None:
        sms = _sm_count[device.id] = device.attributes["MultiProcessorCount"]
    return max(1, min((n + THREADS - 1) // THREADS, 32 * sms))


def build(rule_name, flags, dtype, masked=False, device=False):
    """``kernel(p, g, states, hypers)`` on CuPy arrays: one grid-stride launch on ``p``'s device, current stream.

    ``states`` are the variant's kept states (``rules.get(rule_name).state_names(flags)`` order) and
    ``hypers`` the rule's ``hyper_names`` values as Python numbers, cast here to ``dtype``.
    ``masked``: ``kernel(p, g, states, hypers, mask)`` updates only where the uint8 ``mask`` is nonzero.
    ``device``: ``kernel(p, g, states, consts, scalars[, mask])``, the device-scalar form: ``consts`` passed
    as doubles, ``scalars`` the float64 ``lr``, ``step`` and float32 ``inv_scale``, ``found_inf`` arrays.
    float16 and bfloat16 ``p`` and ``g`` are computed in float32 on float32 states and master weights
    (the last of ``states``), and ``p`` is stored as the new master rounded to nearest even, in the same
    single launch (``cuda_source.CODEC_C``).
    Raises RuntimeError without CuPy or a GPU, TypeError for a dtype the kernels do not take.
    """
    dtype = np.dtype(dtype)
    flags = tuple(flags)
    kernel_source(rule_name, flags, dtype, masked, device)  # fail here, not at the first step, on a bad rule or dtype
    cupy = _cupy()
    rule = rules.get(rule_name)
    n_states = len(rule.state_names(flags)) + is_low_precision(dtype)  # and the master weights
    n_hypers = len(rule.const_names) if device else len(rule.hyper_names)
    sdt = compute_dtype(dtype)
    t = np.float64 if device else sdt.type
    scalar_dtypes = (np.dtype(np.float64),) * 2 + (np.dtype(np.float32),) * 2

    def kernel(p, g, states, hypers, *mask, scalars=()):
        # a raw launch does not check its arguments: a wrong count or dtype would corrupt memory
        if len(states) != n_states or len(hypers) != n_hypers or p.dtype != dtype or g.dtype != dtype \
                or len(mask) != masked or any(s.dtype != sdt for s in states):
            raise ValueError(f"{rule_name} kernel for {dtype}: got {len(states)} states "
                             f"({', '.join(str(s.dtype) for s in states)}), {len(hypers)} hypers, a {p.dtype} p, "
                             f"a {g.dtype} g ({len(mask)} masks); expected {n_states} {sdt} states, {n_hypers} "
                             f"hypers and {dtype} p and g ({int(masked)} masks)")
        dev = p.device
        fn = _kernel(cupy, rule_name, flags, dtype, dev, masked, device)
        n = p.size
        with dev:
            fn((_blocks(n, dev),), (THREADS,), (p, g, *states, np.int64(n), *[t(h) for h in hypers], *scalars,
                                                    *mask))

    def device_kernel(p, g, states, consts, scalars, *mask):
        if len(scalars) != 4 or any(a.dtype != d or a.size != 1 for a, d in zip(scalars, scalar_dtypes)):
            raise ValueError(f"{rule_name} device-scalar kernel: scalars must be 1-element float64 lr and step "
                             f"and float32 inv_scale and found_inf arrays, got "
                             f"{[(a.dtype.name, a.size) for a in scalars]}")
        kernel(p, g, states, consts, *mask, scalars=scalars)
    return device_kernel if device else kernel


def build_check(dtype):
    """``check(g, found_inf)``: one grid-stride launch on ``g``'s device setting the float32
    ``found_inf[0]`` to 1 if ``g`` holds an inf or NaN."""
    dtype = np.dtype(dtype)
    check_source(dtype)
    cupy = _cupy()

    def check(g, found_inf):
        if g.dtype != dtype or found_inf.dtype != np.float32:
            raise ValueError(f"found-inf check for {dtype}: got a {g.dtype} gradient and a {found_inf.dtype} flag")
        dev = g.device
        fn = _kernel(cupy, None, (), dtype, dev, False)
        with dev:
            fn((_blocks(g.size, dev),), (THREADS,), (g, np.int64(g.size), found_inf))
    return check
