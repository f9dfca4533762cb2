"""``bg.cuda``: PyTorch's ``torch.cuda`` queries, answered from the backend registry.

A GPU here means the ``cuda`` device string's backend (CuPy) can run: the same
check :func:`backprop_gpu.get_backend` makes. Numba's CUDA simulator is not a GPU,
so under it :func:`is_available` is False. Layer 4: imports ``array`` only.
"""
from __future__ import annotations

from .array import get_backend
from .array import registry as _registry
from .array.devices import BackendUnavailableError, Device
from .array.registry import BACKENDS, DEFAULTS

_CUDA_BACKEND = DEFAULTS["cuda"][0]  # what the device string ``cuda`` means: cupy


def _unavailable() -> str | None:
    """Why there is no GPU here, or None."""
    return BACKENDS[_CUDA_BACKEND].availability()


def is_available() -> bool:
    """Whether a CUDA GPU can be used (``cuda`` devices work), as ``torch.cuda.is_available``."""
    return _unavailable() is None


def device_count() -> int:
    """The number of visible GPUs; 0 where there is none, as ``torch.cuda.device_count``."""
    if not is_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def _require(what: str) -> None:
    why = _unavailable()
    if why:
        raise BackendUnavailableError(f"bg.cuda.{what}: no CUDA GPU is available: {why}")


def current_device() -> int:
    """The index of the current GPU, as ``torch.cuda.current_device``.

    Raises :class:`~backprop_gpu.BackendUnavailableError` (a RuntimeError) where there is
    no GPU, as torch raises where CUDA cannot be used."""
    _require("current_device()")
    import cupy

    return int(cupy.cuda.runtime.getDevice())


def _index(device) -> int | None:
    """A GPU index from ``None`` (current), an int, ``'cuda[:N]'`` or a :class:`Device`."""
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (int, str, Device)):
        raise TypeError(f"device must be None, an int, a string like 'cuda:0' or a Device, "
                        f"got {type(device).__name__}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"device index must be non-negative, got {device}")
        return device
    d = Device.parse_plain(device) if isinstance(device, str) else device
    if d.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {device}")
    return d.index or 0


def synchronize(device=None) -> None:
    """Wait for all queued work on GPU ``device`` (default: the current one) to finish.

    Where there is no GPU this is a no-op (torch raises instead; see README "Differences
    from PyTorch"): CPU backends run synchronously, so there is nothing to wait for.
    The argument is checked either way."""
    index = _index(device)
    if not is_available():
        return
    get_backend(f"cuda:{current_device() if index is None else index}").synchronize()


def _cuda_instances(index=None):
    """The GPU backends created so far (on GPU ``index``, or all): ``cupy`` and ``numba-cuda`` alike.
    The registry keeps no per-kind seed, so one created after a seeding is not reseeded."""
    return [b for (name, i), b in list(_registry._instances.items())
            if BACKENDS[name].device_type == "cuda" and (index is None or i == index)]


def _check_seed(seed):
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed)


def manual_seed(seed: int) -> None:
    """Seed the generator of the current GPU, as ``torch.cuda.manual_seed``.

    Silently ignored where there is no GPU, as torch's is."""
    seed = _check_seed(seed)
    if not is_available():
        return
    index = current_device()
    get_backend(f"cuda:{index}")  # make sure the default GPU backend exists, then seed it and any other
    for b in _cuda_instances(index):
        b.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    """Seed the generators of every GPU, as ``torch.cuda.manual_seed_all``; silently ignored
    where there is no GPU."""
    seed = _check_seed(seed)
    if not is_available():
        return
    for i in range(device_count()):
        get_backend(f"cuda:{i}")
    for b in _cuda_instances():
        b.manual_seed(seed)


__all__ = ["is_available", "device_count", "current_device", "synchronize", "manual_seed", "manual_seed_all"]
