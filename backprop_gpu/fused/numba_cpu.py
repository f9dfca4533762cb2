"""CPU target: a Numba ``prange`` loop over the flat buffers.

``error_model='numpy'`` matters: Python's error model adds a zero-division
check to every ``/`` that stops vectorisation (measured 3x slower for Adam).

Unless the user chose one (``NUMBA_THREADING_LAYER``), the ``workqueue``
threading layer is used: the OpenMP layer's workers spin after each parallel
region and starve the BLAS threads of the matmuls that follow, which made a
784-1024-1024-10 training step 26 ms instead of 18.7 ms on 2 cores. The
workqueue layer must not be entered from two Python threads at once.
"""
from __future__ import annotations

import math
import os

import numba

from ..optim import rules
from .codegen import loop_source, n_hypers


def _prefer_workqueue() -> None:
    if numba.config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def build(rule_name, flags, dtype):
    _prefer_workqueue()
    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    slots = rules.state_slots(rule_name, flags)
    src = loop_source("loop", slots, n_hypers(py_fn, len(slots)), "", "numba.prange(p.shape[0])")
    ns = {"fn": numba.njit(error_model="numpy")(py_fn), "numba": numba}
    exec(compile(src, f"<fused {rule_name} loop>", "exec"), ns)
    loop = numba.njit(parallel=True, error_model="numpy")(ns["loop"])
    zero = dtype.type(0)

    def kernel(p, g, states, hypers):
        loop(p, g, *states, *hypers, zero)
    return kernel
