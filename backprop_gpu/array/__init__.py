"""Layer 1, the array layer: devices, backends, the array namespace, the fused kernels of
the hot ops (reference and compiled) and the optimizer rules with their fused kernels.

Nothing here knows about tensors or the tape.
"""
from .backend import Backend
from .devices import BackendUnavailableError, Device
from .registry import (BACKENDS, available_backends, backend_availability, default_backend, get_backend,
                       manual_seed, set_default_device)

__all__ = ["Backend", "BackendUnavailableError", "Device", "BACKENDS", "available_backends",
           "backend_availability", "default_backend", "get_backend", "manual_seed", "set_default_device"]
