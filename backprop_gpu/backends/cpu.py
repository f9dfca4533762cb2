"""CPU backends: ``numpy`` (the reference) and ``numba`` (NumPy arrays plus
Numba-compiled fused kernels; the default on CPU)."""
from __future__ import annotations

import numpy as np

from . import host_allocator
from .base import Backend, Device


class NumpyBackend(Backend):
    """Plain NumPy: every op and every optimizer update is vectorised NumPy.

    Creating the first CPU backend makes glibc's malloc keep freed blocks for
    reuse (:mod:`~backprop_gpu.backends.host_allocator`; opt out with
    ``BACKPROP_GPU_HOST_ALLOCATOR=system``).
    """

    name = "numpy"
    kernel_target = "numpy"

    def __init__(self):
        super().__init__()
        self.device = Device("cpu")
        host_allocator.keep_freed_memory()

    @classmethod
    def availability(cls):
        return None


class NumbaBackend(NumpyBackend):
    """NumPy arrays for the ops; fused Numba ``prange`` loops for optimizer steps and the hot ops
    (:mod:`~backprop_gpu.backends.numba_kernels`)."""

    name = "numba"
    kernel_target = "numba"

    def namespace_class(self):
        from .numba_kernels import NumbaNamespace

        return NumbaNamespace

    @classmethod
    def availability(cls):
        try:
            import numba  # noqa: F401
        except ImportError:
            return "the numba package is not installed (pip install numba)"
        return None


__all__ = ["NumpyBackend", "NumbaBackend", "np"]
