"""Floating dtypes beyond NumPy's own: ``bfloat16`` (from ``ml_dtypes``, when installed).

``ml_dtypes.bfloat16`` is a NumPy dtype of kind ``"V"``, so a ``dtype.kind == "f"`` test
misses it; :func:`is_floating` is the test to use wherever bfloat16 counts as floating.
Nothing here imports ``ml_dtypes`` (over a second of start-up): a bfloat16 array can only
exist once it is loaded, so the tests look at the dtype's kind and name, and the
``bfloat16`` attribute loads it on first use.
"""
from __future__ import annotations

import numpy as np


def is_bfloat16(dtype) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16``."""
    return dtype.kind == "V" and dtype.name == "bfloat16"


def is_floating(dtype) -> bool:
    """Whether ``dtype`` is a real floating dtype: float16/32/64 and bfloat16 (torch's ``is_floating_point``)."""
    return dtype.kind == "f" or is_bfloat16(dtype)


def is_differentiable(dtype) -> bool:
    """Whether tensors of ``dtype`` can require grad: floating or complex."""
    return dtype.kind == "c" or is_floating(dtype)


def looks_like_dtype(x) -> bool:
    """Whether ``x`` names a dtype (a ``np.dtype``, a NumPy scalar type, or a string NumPy reads as
    one), as the first argument of ``Tensor.to`` and ``Module.to`` may, rather than a device."""
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        return True
    if isinstance(x, str):
        try:
            np.dtype(x)
        except TypeError:
            return False
        return True
    return False


def __getattr__(name):
    if name == "bfloat16":  # ``ml_dtypes.bfloat16`` as a NumPy dtype, or None without ml_dtypes
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - a base dependency
            value = None
        else:
            value = np.dtype(ml_dtypes.bfloat16)
        globals()["bfloat16"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["bfloat16", "is_bfloat16", "is_floating", "is_differentiable"]
