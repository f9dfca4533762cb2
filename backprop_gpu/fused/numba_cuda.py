"""GPU target: a Numba CUDA grid-stride kernel calling the rule as a device function.

Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the grid is kept tiny,
since every simulated thread is a Python thread; the grid-stride loop covers
the data either way.
"""
from __future__ import annotations

import math

from ..optim import rules
from .codegen import loop_source, n_hypers

THREADS = 256


def _kernel_fn(rule_name, flags, device_fn):
    """The un-jitted grid-stride kernel calling ``device_fn`` (the rule)."""
    from numba import cuda

    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    slots = rules.state_slots(rule_name, flags)
    src = loop_source("kern", slots, n_hypers(py_fn, len(slots)),
                      "start = cuda.grid(1)\nstride = cuda.gridsize(1)", "range(start, p.shape[0], stride)")
    ns = {"fn": device_fn(py_fn), "cuda": cuda}
    exec(compile(src, f"<fused {rule_name} cuda kernel>", "exec"), ns)
    return ns["kern"], slots, py_fn


def launch_config(n: int) -> tuple[int, int]:
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return 2, 32
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return max(1, min((n + THREADS - 1) // THREADS, 32 * sms)), THREADS


def build(rule_name, flags, dtype):
    from numba import cuda

    kern, _, _ = _kernel_fn(rule_name, flags, cuda.jit(device=True))
    kern = cuda.jit(kern)
    zero = dtype.type(0)

    def kernel(p, g, states, hypers):
        blocks, threads = launch_config(p.shape[0])
        kern[blocks, threads](p, g, *states, *hypers, zero)
    return kernel


def compile_ptx(rule_name, flags, dtype):
    """PTX of one variant's rule as a CUDA device function, without a GPU.

    Needs NVRTC (``pip install numba-cuda[cu13]``). It type-checks the rule for
    CUDA, which the simulator never does. The grid-stride loop around it is
    not compiled here: a kernel calling a device function asks the (absent)
    driver for the GPU's compute capability.
    """
    from numba import cuda, from_dtype

    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    n_all = len(rules.get(rule_name).all_states)
    t = from_dtype(dtype)
    sig = (t,) * (2 + n_all + n_hypers(py_fn, n_all))
    ptx, _ = cuda.compile_ptx(py_fn, sig, device=True, cc=(9, 0))  # Hopper; no driver query
    return ptx
