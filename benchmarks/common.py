"""Shared benchmark set-up: fixed thread counts, real backends only, torch as the peer when installed.

Threads: BACKPROP_GPU_BENCH_THREADS (default 2) for OpenBLAS, Numba and torch
alike, set before any of them is imported. OpenBLAS workers are told to sleep
right after a call (OPENBLAS_THREAD_TIMEOUT) so they do not spin against
Numba's threads when the two alternate.
"""
import os

THREADS = os.environ.setdefault("BACKPROP_GPU_BENCH_THREADS", "2")
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
os.environ.pop("NUMBA_ENABLE_CUDASIM", None)  # benchmarks time real devices only

import pytest  # noqa: E402

from backprop_gpu.array import BACKENDS  # noqa: E402

try:
    import torch

    torch.set_num_threads(int(THREADS))
    TORCH = torch
except ImportError:  # the peer is optional: rows without it carry no torch ratio
    TORCH = None

CPU_BACKENDS = ["numpy", "numba"]
GPU_BACKENDS = [n for n in ("cupy", "numba-cuda") if BACKENDS[n].availability() is None]
needs_torch = pytest.mark.skipif(TORCH is None, reason="torch is not installed (pip install torch==2.13.0)")


def memory_triad(n: int):
    """The optimizer floor: a call of a Numba ``prange`` loop with Adam's memory traffic over ``n``
    float32 elements (read p, g, m, v; write p, m, v: 28 B/element), compiled and warmed up."""
    import numba
    import numpy as np

    @numba.njit(parallel=True, error_model="numpy", cache=False)
    def triad(p, g, m, v, s):
        for i in numba.prange(p.size):
            a = g[i] * s
            m[i] = m[i] + a
            v[i] = v[i] + a
            p[i] = p[i] - a
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.random(n, dtype=np.float32) for _ in range(4))
    s = np.float32(1e-9)
    triad(p, g, m, v, s)
    return lambda: triad(p, g, m, v, s)


def cpu_name() -> str:
    """The CPU's marketing name, for reports."""
    import platform

    try:
        import cpuinfo  # py-cpuinfo, which pytest-benchmark brings

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.machine()
    except Exception:  # noqa: BLE001 - a name for the report only
        return platform.processor() or platform.machine()


def tag(benchmark, workload, impl, role="ours", **extra):
    """Label a row for benchmarks/report.py: role is ours, torch or floor."""
    benchmark.group = workload
    benchmark.extra_info.update({"workload": workload, "impl": impl, "role": role, "threads": int(THREADS), **extra})
