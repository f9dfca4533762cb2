"""The backend interface: everything device-specific lives behind it.

The tape, the ops, ``nn`` and ``optim`` only ever talk to a :class:`Backend`:
its array module ``xp`` (NumPy or CuPy), host transfers, a seeded generator and
the fused optimizer kernels. Adding a device kind means one subclass.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class BackendUnavailableError(RuntimeError):
    """Raised when a requested device or backend cannot be used on this machine."""


class Device:
    """A device kind and index, e.g. ``cpu`` or ``cuda:0``. Compares by value."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int | None = None):
        self.type = type
        self.index = index

    def __eq__(self, other):
        if isinstance(other, str):
            other = Device.parse_plain(other)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    __repr__ = lambda self: f"device('{self}')"  # noqa: E731

    @staticmethod
    def parse_plain(s: str) -> "Device":
        kind, _, idx = s.partition(":")
        if kind == "cuda":
            return Device("cuda", int(idx or 0))
        return Device(kind, None)


class Backend(ABC):
    """One device kind. Subclasses set ``name``, ``device`` and ``xp``.

    ``launch_count`` counts fused-kernel launches, so tests can prove that an
    optimizer step over a whole model is a single launch.
    """

    name: str
    device: Device
    xp = np
    #: whether arrays live in host memory (NumPy arrays)
    is_host: bool = True

    def __init__(self):
        self.launch_count = 0
        self._rng = None
        self._seed = None

    def __getattr__(self, name):
        # ``F``, the array namespace VJPs run on when no higher-order graph is recorded, is
        # made on first use (after a subclass has set ``xp``) and then kept as a plain
        # instance attribute: backward reads it once per node.
        if name != "F":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        ns = self.F = self.namespace_class()(self)
        return ns

    def namespace_class(self):
        """The class of :attr:`F` (an :class:`~backprop_gpu.ops.array_namespace.ArrayNamespace`)."""
        from ..ops.array_namespace import ArrayNamespace

        return ArrayNamespace

    # -- arrays ---------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Turn host data (or this backend's arrays) into this backend's array."""
        return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr) -> np.ndarray:
        """A NumPy copy of ``arr`` (always a copy, never a view of device memory)."""
        return np.array(arr, copy=True)

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""

    # -- array functions NumPy and CuPy spell differently -----------------------
    def erf(self, arr):
        """Elementwise error function."""
        from scipy.special import erf

        return erf(arr)

    def scatter_add(self, target, key, values) -> None:
        """``target[key] += values`` with repeated indices accumulating (unbuffered)."""
        self.xp.add.at(target, key, values)

    # -- randomness -----------------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        """Reseed this backend's generator."""
        self._seed = int(seed)
        self._rng = self._make_rng(self._seed)

    @property
    def rng(self):
        if self._rng is None:
            self.manual_seed(0)
        return self._rng

    def _make_rng(self, seed: int):
        return np.random.default_rng(seed)

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

    # -- fused kernels --------------------------------------------------------
    kernel_target: str = "numpy"

    def fused_update(self, rule_name: str, flags: tuple, p, g, states: tuple, hypers: tuple) -> None:
        """Apply optimizer rule ``rule_name`` in place, in one kernel launch."""
        from ..fused import get_kernel

        kernel = get_kernel(self.kernel_target, rule_name, flags, p.dtype)
        kernel(p, g, states, hypers)
        self.launch_count += 1

    @classmethod
    @abstractmethod
    def availability(cls) -> str | None:
        """``None`` if usable here, else a sentence saying what is missing."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} on {self.device}>"
