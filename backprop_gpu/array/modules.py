"""Array modules: where a backend's arrays live and how they move.

* :class:`HostArrays` — NumPy arrays in host memory (the ``numpy`` and ``numba``
  backends, and ``numba-cuda`` under Numba's CUDA simulator);
* :class:`CupyArrays` — CuPy arrays on one GPU (``cupy`` and ``numba-cuda``).

Each is bound to one device. Every allocation a backend makes goes through
:meth:`asarray` here, which enters the device's context, so a ``cuda:1``
backend never allocates on whichever GPU happens to be current. Importing this
module never touches CuPy or a driver.
"""
from __future__ import annotations

import numpy as np

from . import host_allocator
from .devices import BackendUnavailableError, Device


def _cuda_driver_unloadable() -> str | None:
    """Why the CUDA driver library cannot be loaded here (so no GPU can be used), or ``None`` if it can.

    Loading ``libcuda.so.1`` (``nvcuda.dll``) is the check CuPy's runtime makes first; doing it
    ourselves spares the ~1.5 s import of CuPy (and of ml_dtypes, which CuPy imports) on machines
    without a GPU, where ``device='auto'`` then picks the CPU at once."""
    import ctypes
    import sys

    if sys.platform == "darwin":
        return "macOS has no CUDA driver"
    lib = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(lib)
    except OSError:
        return f"the CUDA driver library {lib} cannot be loaded"
    return None


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot run here, or ``None`` if it can.

    CuPy is imported only when it is installed and a CUDA driver can be loaded (or when it was
    imported already, e.g. by the user or a test's stand-in)."""
    import sys

    if "cupy" not in sys.modules:
        import importlib.util

        try:
            installed = importlib.util.find_spec("cupy") is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            return ("CuPy is not installed; install the wheel matching your CUDA driver: "
                    "pip install 'backprop_gpu[gpu]' for CUDA 13, 'backprop_gpu[gpu-cuda12]' for CUDA 12")
        no_driver = _cuda_driver_unloadable()
        if no_driver:
            return f"CuPy is installed but found no CUDA driver or GPU ({no_driver})"
    try:
        import cupy
    except ImportError:
        return ("CuPy is not installed; install the wheel matching your CUDA driver: "
                "pip install 'backprop_gpu[gpu]' for CUDA 13, 'backprop_gpu[gpu-cuda12]' for CUDA 12")
    except Exception as e:  # a broken install, e.g. both cupy wheels present
        return f"CuPy failed to import: {e}"
    try:
        if not cupy.is_available():
            return "CuPy is installed but found no CUDA driver or GPU (cupy.is_available() is False)"
    except Exception as e:
        return f"CuPy found no usable CUDA driver or GPU: {e}"
    return None


def cuda_simulated() -> bool:
    """Whether Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before numba was imported)."""
    try:
        from numba import config
    except ImportError:
        return False
    return bool(config.ENABLE_CUDASIM)


class HostArrays:
    """NumPy arrays in host memory.

    Creating the first one makes glibc's malloc keep freed blocks for reuse
    (:mod:`~backprop_gpu.array.host_allocator`; opt out with
    ``BACKPROP_GPU_HOST_ALLOCATOR=system``).
    """

    xp = np
    is_host = True
    simulated = False

    def __init__(self, device: Device | None = None):
        self.device = device or Device("cpu")
        host_allocator.keep_freed_memory()

    @staticmethod
    def availability(index: int = 0) -> str | None:
        return None

    def asarray(self, data, dtype=None):
        if not isinstance(data, np.ndarray) and hasattr(data, "__cuda_array_interface__") and hasattr(data, "get"):
            data = data.get()  # a CuPy array headed to the host
        return np.asarray(data, dtype=dtype)

    def empty(self, shape, dtype):
        """An uninitialised array on this device (for kernels to fill)."""
        return np.empty(shape, dtype)

    def to_host(self, arr) -> np.ndarray:
        return np.array(arr, copy=True)

    def synchronize(self) -> None:
        pass

    def erf(self, arr):
        from scipy.special import erf

        return erf(arr)

    def scatter_add(self, target, key, values) -> None:
        np.add.at(target, key, values)


class SimulatedCudaArrays(HostArrays):
    """Host arrays standing in for GPU memory under Numba's CUDA simulator (one device)."""

    simulated = True

    def __init__(self, index: int = 0):
        if index != 0:
            raise BackendUnavailableError(f"the CUDA simulator has one device; cuda:{index} requested")
        super().__init__(Device("cuda", 0))


class CupyArrays:
    """CuPy arrays on GPU ``index``; every allocation and transfer runs in that device's context.

    Deferred checks: a check that would need the host to read device data (a class index in
    range, say) is queued with :meth:`defer_check` instead, as a 0-d boolean device array that is
    True on failure, and runs at the next sync this module makes anyway: :meth:`to_host` (every
    ``.item()``, ``.numpy()``, ``float()``, ``print``) and :meth:`synchronize`. The first failed
    check raises there, as PyTorch's device-side asserts surface at the next synchronisation.
    """

    is_host = False
    simulated = False
    #: queued checks kept with what their errors report; beyond this many, older ones are folded
    #: into one flag and report without their details
    MAX_DEFERRED = 256

    def __init__(self, index: int = 0):
        why = cupy_unavailable_reason()
        if why:
            raise BackendUnavailableError(why)
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= index < count:
            raise BackendUnavailableError(f"cuda:{index} requested but only {count} GPU(s) are visible")
        self.xp = cupy
        self.device = Device("cuda", index)
        self.cuda_device = cupy.cuda.Device(index)
        self._deferred: list = []  # (failed flag on the device, callable raising the error)

    @staticmethod
    def availability(index: int = 0) -> str | None:
        return cupy_unavailable_reason()

    def asarray(self, data, dtype=None):
        with self.cuda_device:
            return self.xp.asarray(data, dtype=dtype)

    def empty(self, shape, dtype):
        """An uninitialised array on this device (for kernels to fill)."""
        with self.cuda_device:
            return self.xp.empty(shape, dtype)

    def to_host(self, arr) -> np.ndarray:
        if self._deferred:
            self.check_deferred()
        with self.cuda_device:
            return self.xp.asnumpy(arr)

    def synchronize(self) -> None:
        self.cuda_device.synchronize()
        if self._deferred:
            self.check_deferred()

    def defer_check(self, failed, report) -> None:
        """Queue a check: ``failed`` is a 0-d boolean array on this device, ``report()`` raises the
        error (it may read device data: it runs only when the check has failed)."""
        self._deferred.append((failed, report))
        if len(self._deferred) > self.MAX_DEFERRED:  # no sync for ever: fold, on the device
            with self.cuda_device:
                flags = self.xp.stack([f for f, _ in self._deferred]).any()
            self._deferred = [(flags, _folded_report(self._deferred))]

    def check_deferred(self) -> None:
        """Run the queued checks (one read of their flags); raise the first failure's error."""
        pending, self._deferred = self._deferred, []
        with self.cuda_device:
            failed = self.xp.asnumpy(self.xp.stack([f for f, _ in pending]))
        for bad, (_, report) in zip(failed, pending):
            if bad:
                report()

    def erf(self, arr):
        from cupyx.scipy.special import erf

        with self.cuda_device:
            return erf(arr)

    def scatter_add(self, target, key, values) -> None:
        import cupyx

        with self.cuda_device:
            cupyx.scatter_add(target, key, values)


def _folded_report(pending):
    def report():
        raise IndexError(f"one of {len(pending)} checks deferred on the device failed (the first "
                         f"{CupyArrays.MAX_DEFERRED} with no sync between them were folded into one flag, so "
                         "its details are lost); run under bg.autograd.detect_anomaly() to check at once")
    return report


__all__ = ["HostArrays", "SimulatedCudaArrays", "CupyArrays", "cupy_unavailable_reason", "cuda_simulated"]
