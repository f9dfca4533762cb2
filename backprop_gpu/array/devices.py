"""Devices and the error raised when one cannot be used here."""
from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """Raised when a requested device or backend cannot be used on this machine."""


class DeviceMismatchError(RuntimeError):
    """An op was given tensors on different devices."""


class Device:
    """A device kind and index, e.g. ``cpu`` or ``cuda:0``. Compares by value, also with strings."""

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

    def __repr__(self):
        return f"device('{self}')"

    @staticmethod
    def parse_plain(s: str) -> "Device":
        """``'cuda'``/``'cuda:N'``/``'cpu'`` as a Device, without looking for a backend."""
        kind, _, idx = s.partition(":")
        if kind == "cuda":
            return Device("cuda", int(idx or 0))
        return Device(kind, None)


def gpu_array_device(x) -> str | None:
    """``'cuda:N'`` when ``x`` is a raw GPU array (CuPy's, or any ``__cuda_array_interface__``
    producer), else ``None``. Such arrays must not go through ``np.asarray``: CuPy refuses the
    implicit copy to the host."""
    if not hasattr(x, "__cuda_array_interface__") or type(x).__module__.startswith("numpy"):
        return None
    return f"cuda:{int(getattr(getattr(x, 'device', None), 'id', 0) or 0)}"


__all__ = ["Device", "BackendUnavailableError", "DeviceMismatchError", "gpu_array_device"]
