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

Dtypes are NumPy's, under PyTorch's names (``bg.float32 == numpy.dtype("float32")``):
``float32`` (also ``float``), ``float64`` (``double``), ``float16`` (``half``), ``bfloat16``
(ml_dtypes' type; ``None`` without ml_dtypes), ``int8``, ``int16``, ``int32`` (``int``),
``int64`` (``long``), ``uint8`` and ``bool_`` (``bool``).
"""

from . import ops
from .array import (Backend, BackendUnavailableError, Device, available_backends, default_backend, get_backend,
                    manual_seed, set_default_device)
from .array.devices import DeviceMismatchError
from .ops import *  # noqa: F401,F403 - the op functions: bg.exp, bg.matmul, ...
from .ops import __all__ as _ops_all
from .tape.mode import (detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly,
                        set_grad_enabled)
from .tape.tensor import (Size, Tensor, bool_, double, float16, float32, float64, get_default_dtype, grad, half, int8,
                          int16, int32, int64, is_tensor, long, set_default_dtype, uint8)

#: Loaded on first use (PEP 562), so that ``import backprop_gpu`` pays only for the tensor and its ops:
#: subpackage -> where it lives, and public name -> (module, attribute). ``bg.nn``, ``from backprop_gpu
#: import optim`` and ``import backprop_gpu.nn`` all work as if these were imported here.
_LAZY_MODULES = {"amp": ".amp", "autograd": ".autograd", "cuda": ".cuda", "nn": ".nn", "optim": ".optim",
                 "utils": ".utils", "distributed": ".distributed", "app": ".app"}
_LAZY_NAMES = {
    "autocast": (".amp", "autocast"),
    "bfloat16": (".array.dtypes", "bfloat16"),  # ml_dtypes' bfloat16 (None without ml_dtypes)
    "GradcheckError": (".autograd", "GradcheckError"),
    "gradcheck": (".autograd", "gradcheck"),
    "load": (".utils.serialization", "load"),
    "save": (".utils.serialization", "save"),
}


def __getattr__(name):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name], __name__)
    if name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


# PyTorch's dtype names that are also Python builtins: bg.float, bg.int, bg.bool
float, int, bool = float32, int32, bool_  # noqa: A001

__version__ = "0.1.0"


def device(spec=None) -> Device:
    """The :class:`Device` a device string resolves to (``auto`` included)."""
    return get_backend(spec).device


__all__ = sorted(set(_ops_all) | {
    "amp", "autocast", "bfloat16",
    "autograd", "cuda", "nn", "optim", "utils", "save", "load", "Size", "Tensor", "get_default_dtype", "set_default_dtype",
    "Device", "Backend",
    "BackendUnavailableError",
    "DeviceMismatchError", "GradcheckError", "available_backends", "default_backend", "get_backend", "manual_seed",
    "set_default_device", "device", "gradcheck", "grad", "is_tensor", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "detect_anomaly", "set_detect_anomaly", "float16", "float32", "float64", "int32", "int64",
    "bool_", "float", "int", "bool", "long", "half", "double", "int8", "int16", "uint8"})
