"""The backends, declared once, and device-string parsing.

Each backend is an array module paired with a kernel provider (see
:data:`BACKENDS`). Device parsing, :func:`available_backends`, the test
fixtures and the fused-kernel choice all read that one table: a new backend
is one module plus one line there.

Device strings: ``cpu`` (the default CPU backend: ``numba`` when installed,
else ``numpy``), ``cuda`` / ``cuda:N`` (the ``cupy`` backend), ``auto`` (GPU when
``cupy.is_available()``, else CPU, logged once), or a backend name with an
optional index: ``numpy``, ``numba``, ``cupy[:N]``, ``numba-cuda[:N]``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from . import kernels as K
from .backend import Backend
from .devices import BackendUnavailableError, Device
from .modules import CupyArrays, HostArrays, SimulatedCudaArrays, cuda_simulated, cupy_unavailable_reason
from .rng import normalize_seed

log = logging.getLogger("backprop_gpu")


def _cuda_arrays(index: int = 0):
    return SimulatedCudaArrays(index) if cuda_simulated() else CupyArrays(index)


def _cuda_arrays_availability(index: int = 0) -> str | None:
    if cuda_simulated():
        return None
    why = cupy_unavailable_reason()
    if why:
        return why + "; set NUMBA_ENABLE_CUDASIM=1 before importing numba to use the simulator"
    from numba import cuda

    if not cuda.is_available():
        return "Numba found no CUDA driver or GPU (numba.cuda.is_available() is False)"
    return None


@dataclass(frozen=True)
class BackendSpec:
    """One row of :data:`BACKENDS`: how to make the arrays, which kernels, which device kind."""

    arrays: Callable[[int], object]
    arrays_availability: Callable[[], str | None]
    kernels: K.KernelProvider
    device_type: str  # "cpu" or "cuda"

    def availability(self) -> str | None:
        """``None`` if the backend can run here, else what is missing."""
        return self.kernels.availability() or self.arrays_availability()


BACKENDS: dict[str, BackendSpec] = {
    "numpy": BackendSpec(lambda i: HostArrays(), HostArrays.availability, K.REFERENCE, "cpu"),
    "numba": BackendSpec(lambda i: HostArrays(), HostArrays.availability, K.NUMBA, "cpu"),
    "cupy": BackendSpec(CupyArrays, CupyArrays.availability, K.CUDA, "cuda"),
    "numba-cuda": BackendSpec(_cuda_arrays, _cuda_arrays_availability, K.NUMBA_CUDA, "cuda"),
}
#: what ``cpu`` and ``cuda`` mean, in order of preference
DEFAULTS = {"cpu": ("numba", "numpy"), "cuda": ("cupy",)}

_instances: dict[tuple[str, int], Backend] = {}
_default: Backend | None = None
_auto_logged = False
_seed: int | None = None


def _first_available(kind: str) -> str:
    names = DEFAULTS[kind]
    return next((n for n in names if BACKENDS[n].availability() is None), names[-1])


def _parse(spec: str) -> tuple[str, int]:
    """Map a device string to (backend name, index)."""
    global _auto_logged
    s = spec.strip().lower()
    if s == "auto":
        why = BACKENDS[DEFAULTS["cuda"][0]].availability()
        name = DEFAULTS["cuda"][0] if why is None else _first_available("cpu")
        if not _auto_logged:
            log.info("device 'auto' chose %s", f"cuda:0 ({name})" if why is None else f"cpu ({name}): {why}")
            _auto_logged = True
        return name, 0
    kind, sep, idx = s.partition(":")
    if sep and not idx.isdigit():
        raise ValueError(f"bad device index in {spec!r}; expected e.g. 'cuda:0'")
    index = int(idx or 0)
    if kind == "gpu":
        kind = "cuda"
    if kind in DEFAULTS:
        if kind == "cpu" and idx:
            raise ValueError(f"device {spec!r}: the CPU takes no index")
        return (_first_available(kind) if kind == "cpu" else DEFAULTS[kind][0]), index
    if kind in BACKENDS:
        if BACKENDS[kind].device_type == "cpu" and idx:
            raise ValueError(f"device {spec!r}: the CPU takes no index")
        return kind, index
    raise ValueError(f"unknown device {spec!r}; expected one of cpu, cuda, cuda:N, auto, "
                     f"or a backend name: {', '.join(BACKENDS)}")


def get_backend(device=None) -> Backend:
    """The backend for a device string, a :class:`Device`, a :class:`Backend`, or ``None`` (the default).

    Raises :class:`BackendUnavailableError` naming what is missing (no CuPy, no
    driver or device) when the device cannot be used here.
    """
    if device is None:
        return default_backend()
    if isinstance(device, Backend):
        return device
    if isinstance(device, Device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {type(device).__name__}")
    key = _parse(device)
    b = _instances.get(key)
    if b is None:
        spec = BACKENDS[key[0]]
        why = spec.availability()
        if why:
            raise BackendUnavailableError(f"device {device!r} ({key[0]} backend) is not available: {why}")
        b = Backend(key[0], spec.arrays(key[1]), spec.kernels)
        if _seed is not None:
            b.manual_seed(_seed)
        _instances[key] = b
    return b


def default_backend() -> Backend:
    """The backend used when no device is given (``cpu`` unless changed)."""
    global _default
    if _default is None:
        _default = get_backend("cpu")
    return _default


def set_default_device(device) -> None:
    """Make ``device`` the default for new tensors."""
    global _default
    _default = get_backend(device)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine, in :data:`BACKENDS` order."""
    return [n for n, spec in BACKENDS.items() if spec.availability() is None]


def backend_availability(name: str) -> str | None:
    """``None`` if backend ``name`` can run here, else what is missing."""
    return BACKENDS[name].availability()


def manual_seed(seed: int) -> None:
    """Seed every backend's generator, including ones created later."""
    global _seed
    _seed = normalize_seed(seed)  # checked before anything is seeded
    for b in _instances.values():
        b.manual_seed(seed)


__all__ = ["BACKENDS", "BackendSpec", "Backend", "BackendUnavailableError", "Device", "get_backend",
           "default_backend", "set_default_device", "available_backends", "backend_availability", "manual_seed"]
