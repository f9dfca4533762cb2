"""GPU target: a Numba CUDA grid-stride kernel calling the rule as a device function.

Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the grid is kept tiny,
since every simulated thread is a Python thread; the grid-stride loop covers
the data either way. On a GPU the kernel takes anything with
``__cuda_array_interface__`` (CuPy arrays, Numba device arrays); under the
simulator, NumPy arrays.

The device function is inlined at the Numba IR level (``inline="always"``):
the same kernel then compiles to PTX with no driver present, so
:func:`compile_ptx_check` checks exactly what runs.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import precision, rules
from .codegen import loop_source, n_hypers

THREADS = 256
_sm_count: dict = {}


@functools.lru_cache(maxsize=None)
def _codecs(simulated: bool) -> dict:
    """The float16/bfloat16 codecs (:mod:`.precision`) as device functions ``{name: (load, store)}``.

    The bit casts are libdevice's on a GPU (they compile to PTX without a driver); the simulator
    has no libdevice, so there they are NumPy's scalar views, around the same codec functions."""
    from numba import cuda, int32, uint32

    dev = cuda.jit(device=True, inline="always")
    if simulated:
        as_float, as_bits = precision.numpy_as_float, precision.numpy_as_bits
    else:
        from numba.cuda import libdevice

        def as_float(u):
            return libdevice.int_as_float(int32(u))

        def as_bits(x):
            return uint32(libdevice.float_as_int(x))
    cast = precision.codecs(dev(as_float), dev(as_bits))
    return {name: (dev(load), dev(store)) for name, (load, store) in cast.items()}


def _kernel_fn(rule_name, flags, masked=False, dtype=np.dtype(np.float32), device=False):
    """The un-jitted grid-stride kernel (Python source) calling the rule as a device function
    (``device``: the device-scalar form of ``codegen``, the rule's ``hyper_math`` a device function too)."""
    from numba import config, cuda

    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    slots = rules.state_slots(rule_name, flags)
    low = precision.is_low_precision(dtype)
    rule = rules.get(rule_name)
    src = loop_source("kern", slots, n_hypers(py_fn, len(slots)),
                      "start = cuda.grid(1)\nstride = cuda.gridsize(1)", "range(start, p.shape[0], stride)", masked,
                      ("load", "store") if low else None, len(rule.const_names) if device else None)
    dev = cuda.jit(device=True, inline="always")
    ns = {"fn": dev(py_fn), "cuda": cuda, "ct": precision.compute_dtype(dtype).type}
    if device:
        ns["hfn"] = dev(rule.hyper_math(flags))
    if low:
        ns["load"], ns["store"] = _codecs(bool(config.ENABLE_CUDASIM))[np.dtype(dtype).name]
    exec(compile(src, f"<fused {rule_name} cuda kernel>", "exec"), ns)
    return ns["kern"], slots, py_fn


def launch_config(n: int) -> tuple[int, int]:
    """(blocks, threads): 2 x 32 under the simulator, else ceil(n / 256) blocks capped at 32 per SM."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return 2, 32
    dev = cuda.get_current_device()
    sms = _sm_count.get(dev.id)
    if sms is None:
        sms = _sm_count[dev.id] = dev.MULTIPROCESSOR_COUNT
    return max(1, min((n + THREADS - 1) // THREADS, 32 * sms)), THREADS


def build(rule_name, flags, dtype, masked=False, device=False):
    """``kernel(p, g, states, hypers)``: one grid-stride launch over 1-D contiguous arrays of ``dtype``;
    ``masked``: ``kernel(p, g, states, hypers, mask)``, updating only where the uint8 ``mask`` is nonzero;
    ``device``: ``kernel(p, g, states, consts, scalars[, mask])``, the device-scalar form (``codegen``).

    float16 and bfloat16: ``p`` and ``g`` are viewed as uint16 and converted in the kernel (computed in
    float32 on float32 states from the float32 master weights, the last of ``states``, which are written,
    and ``p`` stored as their rounding to nearest even), in the same single launch."""
    from numba import cuda

    kern, _, _ = _kernel_fn(rule_name, flags, masked, dtype, device)
    kern = cuda.jit(kern)
    low = precision.is_low_precision(dtype)
    t = precision.compute_dtype(dtype).type
    zero = t(0)

    def kernel(p, g, states, hypers, *mask):
        blocks, threads = launch_config(p.shape[0])
        if low:  # CuPy, Numba device and (simulator) NumPy arrays all view
            p, g = p.view(np.uint16), g.view(np.uint16)
        kern[blocks, threads](p, g, *states, *[t(h) for h in hypers], zero, *mask)

    def device_kernel(p, g, states, consts, scalars, *mask):
        blocks, threads = launch_config(p.shape[0])
        if low:
            p, g = p.view(np.uint16), g.view(np.uint16)
        kern[blocks, threads](p, g, *states, *[np.float64(c) for c in consts], *scalars, zero, *mask)
    return device_kernel if device else kernel


_CHECK_SRC = """
def check(g, found_inf):
    bad = 0.0
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        bad += nonfinite(load(g[i]))
    if bad != 0:
        found_inf[0] = 1.0
"""


def _check_fn(dtype):
    """The un-jitted grid-stride found-inf check (``rules.nonfinite`` as a device function): each thread
    sets the flag only if it met an inf or NaN, so the flag is written only with 1."""
    from numba import config, cuda

    dev = cuda.jit(device=True, inline="always")
    simulated = bool(config.ENABLE_CUDASIM)
    # the simulator runs the test on NumPy scalars, where inf - inf warns: there, np.isfinite says the same
    nonfinite = dev((lambda x: 0.0 if np.isfinite(x) else 1.0) if simulated else rules.nonfinite)
    load = _codecs(bool(config.ENABLE_CUDASIM))[np.dtype(dtype).name][0] if precision.is_low_precision(dtype) \
        else dev(lambda x: x)

    # the simulator swaps a kernel's global ``cuda`` for its own: the kernel is made in a namespace of globals
    ns = {"cuda": cuda, "nonfinite": nonfinite, "load": load}
    exec(compile(_CHECK_SRC, "<found-inf check cuda kernel>", "exec"), ns)
    return ns["check"]


def build_check(dtype):
    """``check(g, found_inf)``: one grid-stride launch setting ``found_inf[0] = 1`` on an inf or NaN."""
    from numba import cuda

    kern = cuda.jit(_check_fn(dtype))
    low = precision.is_low_precision(dtype)

    def check(g, found_inf):
        blocks, threads = launch_config(g.shape[0])
        kern[blocks, threads](g.view(np.uint16) if low else g, found_inf)
    return check


def compile_ptx_check(rule_name, flags, dtype, cc=(9, 0), masked=False, device=False) -> str:
    """PTX of one variant's whole grid-stride kernel for compute capability ``cc``, without a GPU
    (for ``dtype`` float16 or bfloat16: the uint16 form with its in-kernel conversions; ``device``:
    the device-scalar form; ``rule_name`` ``"check"``: the found-inf check for ``dtype``).

    Needs NVRTC (``pip install "numba-cuda[cu13]"``) and the simulator off. It
    type-checks the kernel for real CUDA, which the simulator never does.
    """
    from numba import cuda, from_dtype

    from numba import float32, float64

    dtype = np.dtype(dtype)
    t = from_dtype(precision.compute_dtype(dtype))
    arr = t[::1]
    pg = from_dtype(np.dtype(np.uint16))[::1] if precision.is_low_precision(dtype) else arr
    if rule_name == "check":
        ptx, _ = cuda.compile_ptx(_check_fn(dtype), (pg, float32[::1]), cc=cc)
        return ptx
    kern, slots, py_fn = _kernel_fn(rule_name, flags, masked, dtype, device)
    n_kept = sum(k is not None for k in slots)
    if device:
        scalars = (float64,) * len(rules.get(rule_name).const_names) + (float64[::1],) * 2 + (float32[::1],) * 2
    else:
        scalars = (t,) * n_hypers(py_fn, len(slots))
    master = (arr,) if precision.is_low_precision(dtype) else ()
    sig = (pg, pg) + (arr,) * n_kept + master + scalars + (t,)
    if masked:
        from numba import uint8
        sig += (uint8[::1],)
    ptx, _ = cuda.compile_ptx(kern, sig, cc=cc)
    return ptx
