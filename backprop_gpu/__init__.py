"""backprop_gpu: a define-by-run autodiff engine on NumPy, Numba, CuPy and Numba CUDA.

The API follows PyTorch: ``bg.tensor``, ``.backward()``, ``.grad``, ``bg.no_grad()``,
``nn.Module``, ``optim.Adam``. See README.md.
"""
from __future__ import annotations

from . import ops
from .autograd import detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly
from .backends import (Backend, BackendUnavailableError, Device, available_backends, default_backend,
                       get_backend, manual_seed, set_default_device)
from .creation import arange, empty, from_numpy, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .gradcheck import GradcheckError, gradcheck
from .ops import *  # noqa: F401,F403 - the op functions: bg.exp, bg.matmul, ...
from .ops import DeviceMismatchError
from .tensor import Tensor, bool_, float16, float32, float64, grad, int32, int64, is_tensor

__version__ = "0.1.0"


def device(spec=None):
    """The :class:`Device` a device string resolves to (``auto`` included)."""
    return get_backend(spec).device
