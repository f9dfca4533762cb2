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

import math

import numpy as np

from . import rules
from .codegen import loop_source, n_hypers

THREADS = 256
_sm_count: dict = {}


def _kernel_fn(rule_name, flags, masked=False):
    """The un-jitted grid-stride kernel (Python source) calling the rule as a device function."""
    from numba import cuda

    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    slots = rules.state_slots(rule_name, flags)
    src = loop_source("kern", slots, n_hypers(py_fn, len(slots)),
                      "start = cuda.grid(1)\nstride = cuda.gridsize(1)", "range(start, p.shape[0], stride)", masked)
    ns = {"fn": cuda.jit(device=True, inline="always")(py_fn), "cuda": cuda}
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


def build(rule_name, flags, dtype, masked=False):
    """``kernel(p, g, states, hypers)``: one grid-stride launch over 1-D contiguous arrays of ``dtype``;
    ``masked``: ``kernel(p, g, states, hypers, mask)``, updating only where the uint8 ``mask`` is nonzero."""
    from numba import cuda

    kern, _, _ = _kernel_fn(rule_name, flags, masked)
    kern = cuda.jit(kern)
    t = dtype.type
    zero = t(0)

    def kernel(p, g, states, hypers, *mask):
        blocks, threads = launch_config(p.shape[0])
        kern[blocks, threads](p, g, *states, *[t(h) for h in hypers], zero, *mask)
    return kernel


def compile_ptx_check(rule_name, flags, dtype, cc=(9, 0), masked=False) -> str:
    """PTX of one variant's whole grid-stride kernel for compute capability ``cc``, without a GPU.

    Needs NVRTC (``pip install "numba-cuda[cu13]"``) and the simulator off. It
    type-checks the kernel for real CUDA, which the simulator never does.
    """
    from numba import cuda, from_dtype

    kern, slots, py_fn = _kernel_fn(rule_name, flags, masked)
    t = from_dtype(np.dtype(dtype))
    arr = t[::1]
    n_kept = sum(k is not None for k in slots)
    sig = (arr, arr) + (arr,) * n_kept + (t,) * n_hypers(py_fn, len(slots)) + (t,)
    if masked:
        from numba import uint8
        sig += (uint8[::1],)
    ptx, _ = cuda.compile_ptx(kern, sig, cc=cc)
    return ptx
