"""Backend registry and device-string parsing.

Device strings: ``cpu`` (the default CPU backend: ``numba`` when installed,
else ``numpy``), ``cuda`` / ``cuda:N`` (the ``cupy`` backend), ``auto`` (GPU when
``cupy.is_available()``, else CPU, logged once), or a backend name with an
optional index: ``numpy``, ``numba``, ``cupy[:N]``, ``numba-cuda[:N]``.
"""
from __future__ import annotations

import logging

from .base import Backend, BackendUnavailableError, Device
from .cpu import NumbaBackend, NumpyBackend
from .gpu import CupyBackend, NumbaCudaBackend, cupy_unavailable_reason

log = logging.getLogger("backprop_gpu")

BACKENDS: dict[str, type[Backend]] = {
    "numpy": NumpyBackend,
    "numba": NumbaBackend,
    "cupy": CupyBackend,
    "numba-cuda": NumbaCudaBackend,
}
_instances: dict[tuple[str, int], Backend] = {}
_default: Backend | None = None
_auto_logged = False
_seed: int | None = None


def _cpu_default_name() -> str:
    return "numba" if NumbaBackend.availability() is None else "numpy"


def _parse(spec: str) -> tuple[str, int]:
    """Map a device string to (backend name, index)."""
    global _auto_logged
    s = spec.strip().lower()
    if s == "auto":
        why = cupy_unavailable_reason()
        name = "cupy" if why is None else _cpu_default_name()
        if not _auto_logged:
            log.info("device 'auto' chose %s", "cuda:0 (cupy)" if why is None else f"cpu ({name}): {why}")
            _auto_logged = True
        return name, 0
    kind, sep, idx = s.partition(":")
    if sep and not idx.isdigit():
        raise ValueError(f"bad device index in {spec!r}; expected e.g. 'cuda:0'")
    index = int(idx or 0)
    if kind == "cpu":
        if idx:
            raise ValueError(f"device {spec!r}: the CPU takes no index")
        return _cpu_default_name(), 0
    if kind in ("cuda", "gpu"):
        return "cupy", index
    if kind in BACKENDS:
        return kind, index
    raise ValueError(f"unknown device {spec!r}; expected one of cpu, cuda, cuda:N, auto, "
                     f"or a backend name: {', '.join(BACKENDS)}")


def get_backend(device=None) -> Backend:
    """The backend for a device string, a :class:`Backend`, or ``None`` (the default).

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
        cls = BACKENDS[key[0]]
        why = cls.availability()
        if why:
            raise BackendUnavailableError(f"device {device!r} ({key[0]} backend) is not available: {why}")
        b = cls(key[1]) if key[0] in ("cupy", "numba-cuda") else cls()
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
    """Names of the backends usable on this machine."""
    return [n for n, cls in BACKENDS.items() if cls.availability() is None]


def manual_seed(seed: int) -> None:
    """Seed every backend's generator, including ones created later."""
    global _seed
    _seed = int(seed)
    for b in _instances.values():
        b.manual_seed(seed)


__all__ = ["Backend", "BackendUnavailableError", "Device", "get_backend", "default_backend",
           "set_default_device", "available_backends", "manual_seed", "BACKENDS"]
