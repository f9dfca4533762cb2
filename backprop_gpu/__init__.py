"""backprop_gpu: a define-by-run autodiff engine on NumPy, Numba, CuPy and Numba CUDA.

The API follows PyTorch: ``bg.tensor``, ``.backward()``, ``.grad``, ``bg.no_grad()``,
``bg.nn.Module``, ``bg.optim.Adam``. See README.md.

The package is layered, and imports only ever point down (a test checks it):

1. ``array``: devices, backends, the array namespace and fused kernels, optimizer rules;
2. ``tape``: Tensor, the op base and ``apply``, the backward engine;
3. ``ops``: every differentiable op;
4. ``nn``, ``optim``, ``autograd``, ``utils``;
5. ``distributed``;
6. ``app``: training loop, CLI, checkpoints, datasets, demos, plots.
"""

from . import autograd, cuda, nn, ops, optim, utils
from .array import (Backend, BackendUnavailableError, Device, available_backends, default_backend, get_backend,
                    manual_seed, set_default_device)
from .array.devices import DeviceMismatchError
from .autograd import GradcheckError, gradcheck
from .ops import *  # noqa: F401,F403 - the op functions: bg.exp, bg.matmul, ...
from .ops import __all__ as _ops_all
from .tape.mode import (detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly,
                        set_grad_enabled)
from .tape.tensor import (Size, Tensor, bool_, double, float16, float32, float64, get_default_dtype, grad, half, int8,
                          int16, int32, int64, is_tensor, long, set_default_dtype, uint8)
from .utils.serialization import load, save

# PyTorch's dtype names that are also Python builtins: bg.float, bg.int, bg.bool
float, int, bool = float32, int32, bool_  # noqa: A001

__version__ = "0.1.0"


def device(spec=None) -> Device:
    """The :class:`Device` a device string resolves to (``auto`` included)."""
    return get_backend(spec).device


__all__ = sorted(set(_ops_all) | {
    "autograd", "cuda", "nn", "optim", "utils", "save", "load", "Size", "Tensor", "get_default_dtype", "set_default_dtype",
    "Device", "Backend",
    "BackendUnavailableError",
    "DeviceMismatchError", "GradcheckError", "available_backends", "default_backend", "get_backend", "manual_seed",
    "set_default_device", "device", "gradcheck", "grad", "is_tensor", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "detect_anomaly", "set_detect_anomaly", "float16", "float32", "float64", "int32", "int64",
    "bool_", "float", "int", "bool", "long", "half", "double", "int8", "int16", "uint8"})
