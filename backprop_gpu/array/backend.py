"""A backend: one array module on one device, paired with one kernel provider.

The tape, the ops, ``nn`` and ``optim`` only ever talk to a :class:`Backend`:
its array module ``xp`` (NumPy or CuPy), host transfers, a seeded generator,
the array namespace ``F`` (``xp`` plus the fused kernels of the hot ops) and
the fused optimizer kernels. Which array module and which kernel provider make
up each backend is declared once, in :mod:`backprop_gpu.array.registry`.
"""
from __future__ import annotations

import numpy as np

from .optim import get_kernel


class Backend:
    """``arrays`` (an :mod:`~backprop_gpu.array.modules` instance bound to a device) plus
    ``kernels`` (a :mod:`~backprop_gpu.array.kernels` provider), under ``name``.

    ``launch_count`` counts fused-kernel launches, so tests can prove that an
    optimizer step over a whole model is a single launch.
    """

    def __init__(self, name: str, arrays, kernels):
        self.name = name
        self.arrays = arrays
        self.kernels = kernels
        self.xp = arrays.xp
        self.device = arrays.device
        #: whether arrays live in host memory (NumPy arrays)
        self.is_host = arrays.is_host
        #: whether the device is Numba's CUDA simulator (host arrays standing in for a GPU)
        self.simulated = arrays.simulated
        self.launch_count = 0
        self._rng = None
        self._seed = None
        # the array namespace VJPs run on: a plain attribute, read once per backward node
        self.F = kernels.namespace(self)

    # -- arrays ---------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Turn host data (or this backend's arrays) into this backend's array, on its device."""
        return self.arrays.asarray(data, dtype)

    def to_host(self, arr) -> np.ndarray:
        """A NumPy copy of ``arr`` (always a copy, never a view of device memory)."""
        return self.arrays.to_host(arr)

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""
        self.arrays.synchronize()

    def erf(self, arr):
        """Elementwise error function."""
        return self.arrays.erf(arr)

    def scatter_add(self, target, key, values) -> None:
        """``target[key] += values`` with repeated indices accumulating (unbuffered)."""
        self.arrays.scatter_add(target, key, values)

    # -- randomness -----------------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        """Reseed this backend's generator."""
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)

    @property
    def rng(self):
        if self._rng is None:
            self.manual_seed(0)
        return self._rng

    def random_normal(self, shape, dtype):
        """Standard-normal samples as this backend's array."""
        return self.asarray(self.rng.standard_normal(shape, dtype=np.float64).astype(dtype))

    def random_uniform(self, shape, dtype):
        """Uniform [0, 1) samples as this backend's array."""
        return self.asarray(self.rng.random(shape, dtype=np.float64).astype(dtype))

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of range(n) (data loaders shuffle on the host)."""
        return self.rng.permutation(n)

    def rng_state(self) -> dict:
        """The generator state as JSON-able data (for checkpoints)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # -- fused optimizer kernels ------------------------------------------------
    def fused_update(self, rule_name: str, flags: tuple, p, g, states: tuple, hypers: tuple, mask=None) -> None:
        """Apply optimizer rule ``rule_name`` in place, in one kernel launch; with ``mask`` (uint8, as
        long as ``p``, on this device) only to the elements where it is nonzero."""
        if mask is None:
            get_kernel(self.kernels.optim_target, rule_name, flags, p.dtype)(p, g, states, hypers)
        else:
            get_kernel(self.kernels.optim_target, rule_name, flags, p.dtype, True)(p, g, states, hypers, mask)
        self.launch_count += 1

    def __reduce__(self):
        # pickled and deep-copied by name: the one backend of that device in the receiving process
        spec = self.name if self.device.type == "cpu" else f"{self.name}:{self.device.index or 0}"
        return _backend_named, (spec,)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        sim = " (simulated)" if self.simulated else ""
        return f"<Backend {self.name} on {self.device}{sim}>"


__all__ = ["Backend"]


def _backend_named(spec: str) -> "Backend":
    from .registry import get_backend  # the registry builds backends: imported when one is unpickled

    return get_backend(spec)

