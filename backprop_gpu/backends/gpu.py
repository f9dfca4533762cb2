"""GPU backends: ``cupy`` (CuPy arrays, CUDA C kernels from ``kernels/``) and
``numba-cuda`` (CuPy arrays for the ops, Numba CUDA kernels for fused paths).

Both import cleanly on a machine without a GPU; they only report themselves
unavailable. ``numba-cuda`` also runs under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), where its arrays are NumPy arrays on the host.
"""
from __future__ import annotations

import numpy as np

from .base import Backend, BackendUnavailableError, Device


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot run here, or ``None`` if it can."""
    try:
        import cupy
    except ImportError:
        return ("CuPy is not installed; install the wheel matching your CUDA driver: "
                "pip install 'backprop_gpu[gpu]' (CUDA 13, cupy-cuda13x) or cupy-cuda12x for CUDA 12")
    except Exception as e:  # a broken install, e.g. both cupy wheels present
        return f"CuPy failed to import: {e}"
    try:
        if not cupy.is_available():
            return "CuPy is installed but found no CUDA driver or GPU (cupy.is_available() is False)"
    except Exception as e:
        return f"CuPy found no usable CUDA driver or GPU: {e}"
    return None


def _check_index(index: int) -> None:
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise BackendUnavailableError(f"cuda:{index} requested but only {count} GPU(s) are visible")


class CupyBackend(Backend):
    """CuPy arrays on one GPU; fused optimizer kernels are RawKernels from ``kernels/``."""

    name = "cupy"
    kernel_target = "cupy"
    is_host = False

    def __init__(self, index: int = 0):
        super().__init__()
        why = self.availability()
        if why:
            raise BackendUnavailableError(why)
        _check_index(index)
        import cupy

        self.xp = cupy
        self.device = Device("cuda", index)
        self._cuda_device = cupy.cuda.Device(index)
        self._cuda_device.use()

    @classmethod
    def availability(cls):
        return cupy_unavailable_reason()

    def asarray(self, data, dtype=None):
        with self._cuda_device:
            return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        return self.xp.asnumpy(arr)

    def synchronize(self):
        self._cuda_device.synchronize()

    def erf(self, arr):
        from cupyx.scipy.special import erf

        return erf(arr)

    def scatter_add(self, target, key, values):
        import cupyx

        cupyx.scatter_add(target, key, values)


class NumbaCudaBackend(Backend):
    """Numba CUDA kernels for the fused paths.

    On a GPU its arrays are CuPy arrays (Numba launches on them through
    ``__cuda_array_interface__``). Under the CUDA simulator its arrays are NumPy
    arrays, so the whole GPU code path is exercised on a CPU-only machine.
    """

    name = "numba-cuda"
    kernel_target = "numba-cuda"

    def __init__(self, index: int = 0):
        super().__init__()
        why = self.availability()
        if why:
            raise BackendUnavailableError(why)
        self.simulated = self._simulated()
        self.device = Device("cuda", index)
        if self.simulated:
            if index != 0:
                raise BackendUnavailableError(f"the CUDA simulator has one device; cuda:{index} requested")
            self.xp = np
            self.is_host = True
        else:
            _check_index(index)
            import cupy

            self.xp = cupy
            self.is_host = False
            self._cuda_device = cupy.cuda.Device(index)
            self._cuda_device.use()

    @staticmethod
    def _simulated() -> bool:
        from numba import config

        return bool(config.ENABLE_CUDASIM)

    @classmethod
    def availability(cls):
        try:
            from numba import cuda
        except ImportError:
            return "numba (with numba-cuda) is not installed"
        if cls._simulated():
            return None
        why = cupy_unavailable_reason()
        if why:
            return why + "; set NUMBA_ENABLE_CUDASIM=1 before importing numba to use the simulator"
        if not cuda.is_available():
            return "Numba found no CUDA driver or GPU (numba.cuda.is_available() is False)"
        return None

    def asarray(self, data, dtype=None):
        if self.simulated:
            return np.asarray(data, dtype=dtype)
        with self._cuda_device:
            return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        return np.array(arr, copy=True) if self.simulated else self.xp.asnumpy(arr)

    def synchronize(self):
        if not self.simulated:
            self._cuda_device.synchronize()

    def erf(self, arr):
        return super().erf(arr) if self.simulated else CupyBackend.erf(self, arr)

    def scatter_add(self, target, key, values):
        if self.simulated:
            super().scatter_add(target, key, values)
        else:
            CupyBackend.scatter_add(self, target, key, values)

    def __repr__(self):
        sim = " (simulated)" if self.simulated else ""
        return f"<NumbaCudaBackend on {self.device}{sim}>"
