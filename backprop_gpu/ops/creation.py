"""Tensor factories: tensor, zeros, ones, full, arange, randn, rand, ..."""
from __future__ import annotations

import numpy as np

from ..array import get_backend
from ..tape.tensor import Tensor, float32


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``.

    dtype follows NumPy/CuPy arrays given as input (float64 stays float64);
    Python floats and lists of floats default to float32, Python ints to int64.
    """
    if not isinstance(data, Tensor) and hasattr(data, "copy"):
        data = data.copy()  # NumPy/CuPy input: never alias the caller's array
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _shape(shape):
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _filled(fill, shape, dtype, device, requires_grad):
    b = get_backend(device)
    arr = b.xp.full(_shape(shape), fill, dtype=np.dtype(dtype or float32))
    return Tensor._make(arr, b).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (float32 unless ``dtype`` says otherwise)."""
    return _filled(0, shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones."""
    return _filled(1, shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with ``fill_value``."""
    return _filled(fill_value, (shape,) if isinstance(shape, int) else tuple(shape), dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None) -> Tensor:
    """An uninitialised tensor."""
    b = get_backend(device)
    return Tensor._make(b.xp.empty(_shape(shape), dtype=np.dtype(dtype or float32)), b)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Evenly spaced values in [start, stop); int64 for integer arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if ints else float32
    b = get_backend(device)
    return Tensor._make(b.xp.arange(start, stop, step, dtype=np.dtype(dtype)), b)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard-normal samples from the backend's seeded generator (see :func:`manual_seed`)."""
    b = get_backend(device)
    return Tensor._make(b.random_normal(_shape(shape), np.dtype(dtype or float32)), b).requires_grad_(requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the backend's seeded generator."""
    b = get_backend(device)
    return Tensor._make(b.random_uniform(_shape(shape), np.dtype(dtype or float32)), b).requires_grad_(requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def from_numpy(arr: np.ndarray, device=None) -> Tensor:
    """A tensor sharing ``arr``'s memory on the CPU (copied to other devices)."""
    b = get_backend(device)
    return Tensor._make(arr if b.is_host else b.asarray(arr), b)
