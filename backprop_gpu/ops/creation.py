"""Tensor factories: tensor, zeros, ones, full, arange, randn, rand, ..."""
from __future__ import annotations

import numpy as np

from ..array import get_backend
from ..array.devices import gpu_array_device
from ..tape.tensor import Tensor, get_default_dtype


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``.

    dtype follows NumPy/CuPy arrays given as input (float64 stays float64);
    Python floats and lists of floats default to :func:`get_default_dtype` (float32), Python ints to int64.
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
    arr = b.xp.full(_shape(shape), fill, dtype=np.dtype(dtype or get_default_dtype()))
    return Tensor._make(arr, b).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (the default float dtype, float32, unless ``dtype`` says otherwise)."""
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
    return Tensor._make(b.xp.empty(_shape(shape), dtype=np.dtype(dtype or get_default_dtype())), b)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Evenly spaced values in [start, stop); int64 for integer arguments, else the default float dtype."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if ints else get_default_dtype()
    b = get_backend(device)
    return Tensor._make(b.xp.arange(start, stop, step, dtype=np.dtype(dtype)), b)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard-normal samples from the backend's seeded generator (see :func:`manual_seed`)."""
    b = get_backend(device)
    arr = b.random_normal(_shape(shape), np.dtype(dtype or get_default_dtype()))
    return Tensor._make(arr, b).requires_grad_(requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the backend's seeded generator."""
    b = get_backend(device)
    arr = b.random_uniform(_shape(shape), np.dtype(dtype or get_default_dtype()))
    return Tensor._make(arr, b).requires_grad_(requires_grad)


def logspace(start, end, steps: int, base: float = 10.0, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``torch.logspace``: ``steps`` values ``base ** linspace(start, end, steps)``."""
    b = get_backend(device)
    arr = base ** b.xp.linspace(start, end, int(steps), dtype=np.float64)
    return Tensor._make(arr.astype(np.dtype(dtype or get_default_dtype())), b).requires_grad_(requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    """Zeros with ``t``'s shape, dtype (unless given) and device."""
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    """Ones with ``t``'s shape, dtype (unless given) and device."""
    return ones(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def from_numpy(arr: np.ndarray, device=None) -> Tensor:
    """A tensor sharing ``arr``'s memory on the CPU (copied to other devices)."""
    b = get_backend(device)
    return Tensor._make(arr if b.is_host else b.asarray(arr), b)


#: DLPack device types (dlpack.h's DLDeviceType): what ``from_dlpack`` takes
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13


def from_dlpack(ext_tensor) -> Tensor:
    """A tensor sharing the memory of ``ext_tensor``, any object with ``__dlpack__`` (a torch tensor,
    a NumPy or CuPy array, a JAX array), as ``torch.from_dlpack``: host memory becomes a CPU tensor,
    CUDA memory a tensor on the ``cuda:N`` backend of its GPU. No copy is made."""
    if not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(f"from_dlpack expects an object with __dlpack__ (a tensor or array), got "
                        f"{type(ext_tensor).__name__}; a bare DLPack capsule cannot say its device, pass the "
                        "producer itself")
    kind, index = ext_tensor.__dlpack_device__()
    if kind in (_DL_CPU, _DL_CUDA_HOST):
        b = get_backend("cpu")
        return Tensor._make(np.from_dlpack(ext_tensor), b)
    if kind in (_DL_CUDA, _DL_CUDA_MANAGED):
        b = get_backend(f"cuda:{int(index)}")
        with b.arrays.cuda_device:
            return Tensor._make(b.xp.from_dlpack(ext_tensor), b)
    raise ValueError(f"from_dlpack: DLPack device type {kind} (index {index}) is neither the CPU nor a CUDA GPU")


def _int_shape(size, what):
    shape = _shape(size) if isinstance(size, tuple) else _shape((size,))
    if any(s < 0 for s in shape):
        raise ValueError(f"{what}: negative dimension in size {shape}")
    return shape


def randint(low, high=None, size=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``torch.randint(high, size)`` or ``randint(low, high, size)``: uniform integers in [low, high),
    drawn on the device from the backend's Philox stream (``high - low`` at most 2**63)."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint() missing the size: randint(high, size) or randint(low, high, size)")
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be larger than low ({low})")
    dtype = np.dtype(dtype or np.int64)
    if requires_grad:
        raise TypeError(f"randint: only floating-point tensors can require grad, got dtype {dtype}")
    b = get_backend(device)
    return Tensor._make(b.random_integers(low, high, _int_shape(size, "randint"), dtype), b)


def randperm(n: int, *, dtype=None, device=None) -> Tensor:
    """``torch.randperm``: a random permutation of ``0 .. n-1`` (int64), drawn on the device."""
    if n < 0:
        raise ValueError(f"randperm: n must be non-negative, got {n}")
    b = get_backend(device)
    return Tensor._make(b.permutation(int(n), np.dtype(dtype or np.int64)), b)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``torch.linspace``: ``steps`` evenly spaced values from ``start`` to ``end`` inclusive (the
    default float dtype)."""
    if steps < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {steps}")
    b = get_backend(device)
    arr = b.xp.linspace(start, end, int(steps), dtype=np.float64).astype(np.dtype(dtype or get_default_dtype()))
    return Tensor._make(arr, b).requires_grad_(requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``torch.eye``: an ``n`` x ``m`` identity matrix (``m`` defaults to ``n``)."""
    b = get_backend(device)
    return Tensor._make(b.xp.eye(int(n), None if m is None else int(m), dtype=np.dtype(dtype or get_default_dtype())),
                        b).requires_grad_(requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """A tensor like ``t`` (shape, dtype, device) filled with ``fill_value``."""
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def empty_like(t: Tensor, dtype=None) -> Tensor:
    """An uninitialised tensor like ``t``."""
    return empty(t.shape, dtype=dtype or t.dtype, device=t.backend)


def rand_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples shaped like ``t``, on its device."""
    return rand(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    """Standard-normal samples shaped like ``t``, on its device."""
    return randn(t.shape, dtype=dtype or t.dtype, device=t.backend, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """``torch.as_tensor``: ``data`` itself when it already is a tensor of that dtype and device,
    a tensor sharing a NumPy array's memory on the CPU, else a new tensor."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)  # ``data`` itself when nothing changes
    b = get_backend(device if device is not None else gpu_array_device(data))  # a CuPy array stays on its GPU
    if isinstance(data, np.ndarray) and b.is_host and (dtype is None or np.dtype(dtype) == data.dtype):
        return Tensor._make(data, b)
    return Tensor(data, dtype=dtype, device=b)
