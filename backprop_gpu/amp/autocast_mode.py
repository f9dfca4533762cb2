"""``autocast``: ops of PyTorch's lists run in a lower-precision dtype, or in float32.

How it hooks in: entering an enabled region installs :meth:`_Policy.cast` as the tape's
input hook (``state.cast``, :mod:`backprop_gpu.tape.mode`) and clears the ``state.plain``
fast flag, so :func:`~backprop_gpu.tape.op.apply` calls the hook before every op's forward.
The hook looks the op's name up in the device type's table (:mod:`.lists`) and replaces
the inputs it must cast by *recorded* casts: the gradient of a float32 master weight used
by a bfloat16 matmul comes back through the cast's VJP in float32. Outside autocast the
cost is the one ``state.plain`` read ``apply`` makes anyway.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..array.dtypes import bfloat16, is_floating
from ..ops.elementwise import astype
from ..tape.mode import _ModeSwitch, state
from ..tape.tensor import Tensor
from . import lists

_float32 = np.dtype("float32")
_float64 = np.dtype("float64")
_float16 = np.dtype("float16")


class _Policy:
    """The autocast settings in force in one thread: per device type, the op table and the dtype."""

    __slots__ = ("by_device", "cache")

    def __init__(self, by_device: dict, cache):
        self.by_device = by_device  # {device type: (table, dtype)}
        self.cache = cache          # {(id(leaf), dtype): (leaf, version, cast)}, or None

    def cast(self, name, inputs):
        """``inputs`` with the ones ``name``'s list says to cast replaced by recorded casts."""
        out = None
        for i, t in enumerate(inputs):
            if not isinstance(t, Tensor):
                continue
            entry = self.by_device.get(t.backend.device.type)
            if entry is None:
                continue
            how = entry[0].get(name)
            if how is None:
                return inputs
            target = entry[1] if how == "lower" else _float32
            d = t.array.dtype
            # float64 is never cast, as in torch ("ops that run in float64 are not eligible")
            if d == target or d == _float64 or not is_floating(d):
                continue
            if out is None:
                out = list(inputs)
            out[i] = self._cast(t, target)
        return inputs if out is None else tuple(out)

    def _cast(self, t, target):
        # torch caches the casts of leaves that require grad (the weights) for the region; a
        # cast is stale once the weight changes (an optimizer step) or a backward freed its node
        # (gradient accumulation over several forwards in one region)
        if self.cache is None or not t.requires_grad or t._node is not None or not state.grad:
            return astype(t, target)
        key = (id(t), target)
        hit = self.cache.get(key)
        if hit is not None and hit[0] is t and hit[1] == t._version[0] and hit[2]._node.inputs is not None:
            return hit[2]
        res = astype(t, target)
        self.cache[key] = (t, t._version[0], res)
        return res


def _resolve_dtype(device_type, dtype):
    if dtype is None:
        name = lists.DEFAULT_DTYPE[device_type]
    else:
        name = getattr(dtype, "name", None) or np.dtype(dtype).name
    if name == "bfloat16":
        if bfloat16 is None:
            raise RuntimeError("autocast to bfloat16 needs the ml_dtypes package (pip install ml_dtypes), "
                               "which gives NumPy its bfloat16 dtype; or pass dtype=backprop_gpu.float16")
        return bfloat16
    if name == "float16":
        return _float16
    return None


class autocast(_ModeSwitch):
    """Run the ops of PyTorch's autocast lists in lower precision, as ``torch.autocast``.

    ``autocast(device_type, dtype=None, enabled=True, cache_enabled=None)``: a context manager
    and a decorator (functions and generators). Inside it, on tensors of ``device_type``
    (``'cpu'`` or ``'cuda'``), matrix products, linear layers and convolutions cast their
    floating inputs to ``dtype`` (default bfloat16 on ``'cpu'``, float16 on ``'cuda'``), the
    float32-list ops (losses, and on ``'cuda'`` also softmax, reductions, normalisation and
    range-sensitive pointwise ops) cast float16/bfloat16 inputs up to float32, and every
    other op runs in the widest type of its inputs; :mod:`backprop_gpu.amp.lists` has the
    lists. The casts are recorded, so each parameter's gradient comes back in its own dtype.
    float64 inputs are never cast. Run the backward pass outside the region, as in torch.

    ``cache_enabled`` (default True) reuses the cast of a weight (a leaf that requires grad)
    within the region until the weight changes. A ``dtype`` the device type does not support
    warns and disables the region, as torch does.
    """

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled=None):
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        if device_type not in lists.LOWER:
            raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}' "
                               f"(supported: {sorted(lists.LOWER)})")
        self.device = device_type
        self.fast_dtype = _resolve_dtype(device_type, dtype)
        self._enabled = bool(enabled)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        self._dtype_arg = dtype
        if self._enabled and self.fast_dtype is None:
            warnings.warn(f"In {device_type.upper()} autocast, but the target dtype {dtype} is not supported. "
                          f"Disabling autocast.\n{device_type.upper()} Autocast only supports dtypes of "
                          "float16 and bfloat16 currently.", UserWarning, stacklevel=2)
            self._enabled = False

    def _copy(self):
        obj = object.__new__(type(self))
        obj.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_prev"})
        return obj

    def __enter__(self):
        prev = state.cast
        outer = getattr(prev, "__self__", None)
        outer = outer if isinstance(outer, _Policy) else None
        by_device = dict(outer.by_device) if outer is not None else {}
        if self._enabled:
            by_device[self.device] = (lists.policy(self.device), self.fast_dtype)
        else:
            by_device.pop(self.device, None)
        cache = outer.cache if outer is not None and outer.cache is not None else {}
        policy = _Policy(by_device, cache if self._cache_enabled else None) if by_device else None
        self._prev = state.set_cast(policy.cast if policy is not None else None)
        return self

    def __exit__(self, *exc):
        state.set_cast(self._prev)
        del self._prev
        return False


def _policy_now():
    p = getattr(state.cast, "__self__", None)
    return p if isinstance(p, _Policy) else None


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    """Whether autocast is on for ``device_type`` in this thread, as ``torch.is_autocast_enabled``."""
    p = _policy_now()
    return p is not None and device_type in p.by_device


def get_autocast_dtype(device_type: str):
    """The dtype autocast uses for ``device_type`` (its default when no region is active), as
    ``torch.get_autocast_dtype``."""
    p = _policy_now()
    if p is not None and device_type in p.by_device:
        return p.by_device[device_type][1]
    return _resolve_dtype(device_type, None)


def is_autocast_available(device_type: str) -> bool:
    """Whether ``device_type`` supports autocast, as ``torch.amp.is_autocast_available``."""
    return device_type in lists.LOWER


__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "is_autocast_available"]
