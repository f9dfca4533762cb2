"""The ``numba`` backend's array namespace: the fused kernels of the hot ops, compiled.

Each method overrides the reference version of the same name in
:class:`~backprop_gpu.ops.array_namespace.ArrayNamespace` for the arrays it
handles (C-contiguous float32/float64 of the expected shapes) and falls back
to the reference for anything else, so results never depend on which path
ran; ``tests/test_kernels.py`` checks each against the reference.

The loops use ``error_model='numpy'`` (no division checks that stop
vectorisation) and are cached on disk. Each is compiled serial and parallel:
arrays of :data:`PARALLEL_MIN` elements or more take the parallel one, on the
workqueue threading layer (see :mod:`backprop_gpu.fused.numba_cpu`).
"""
from __future__ import annotations

import numba
import numpy as np

from ..fused.numba_cpu import PARALLEL_MIN, _prefer_workqueue
from ..ops.array_namespace import ArrayNamespace

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel(fn):
    """``fn`` compiled twice, serial and ``parallel=True`` (its ``numba.prange`` loops
    split across threads); the call picks by the size of the first array. Below
    :data:`~backprop_gpu.fused.numba_cpu.PARALLEL_MIN` elements waking the worker threads
    costs more than it saves: on the 2-core VM a parallel launch took ~0.3-0.5 ms,
    against 0.04 ms for a whole 1 MB ReLU pass on one thread."""
    serial = numba.njit(cache=True, error_model="numpy", nogil=True)(fn)
    parallel = numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)(fn)

    def run(first, *rest):
        return (parallel if first.size >= PARALLEL_MIN else serial)(first, *rest)
    run.serial, run.parallel = serial, parallel
    run.__name__ = run.__qualname__ = fn.__name__
    return run


@_kernel
def _bias_relu_rows(y, b):
    n, m = y.shape
    for i in numba.prange(n):
        for j in range(m):
            v = y[i, j] + b[j]
            y[i, j] = 0 if v < 0 else v  # NaN stays NaN, as NumPy's maximum


@_kernel
def _relu_flat(y):
    for i in numba.prange(y.shape[0]):
        if y[i] < 0:
            y[i] = 0


@_kernel
def _relu_backward_flat(g, out, res):
    for i in numba.prange(g.shape[0]):
        res[i] = g[i] if out[i] > 0 else 0


def _plain(*arrays) -> bool:
    """Whether every array is C-contiguous, of one float dtype, and non-empty."""
    dt = arrays[0].dtype
    return dt in _FLOATS and all(a.dtype == dt and a.flags.c_contiguous and a.size for a in arrays)


class NumbaNamespace(ArrayNamespace):
    """``xp`` (NumPy) plus Numba-compiled versions of the fused kernels."""

    def __init__(self, backend):
        super().__init__(backend)
        _prefer_workqueue()

    def bias_relu_(self, y, b):
        if b is None:
            if _plain(y):
                _relu_flat(y.reshape(-1))
                return y
        elif y.ndim >= 1 and b.shape == y.shape[-1:] and _plain(y, b):
            _bias_relu_rows(y.reshape(-1, y.shape[-1]), b)
            return y
        return super().bias_relu_(y, b)

    def relu_backward(self, g, out):
        if g.shape == out.shape and _plain(g, out):
            res = np.empty_like(g)
            _relu_backward_flat(g.reshape(-1), out.reshape(-1), res.reshape(-1))
            return res
        return super().relu_backward(g, out)
