"""In-place Tensor methods (``x[k] = v``, ``add_``, ``mul_``, ``+=``, ``copy_`` ...), recorded as PyTorch records them.

With no gradient involved the array changes in place and the tensor's version
goes up. When grad mode is on and the tensor requires grad (a non-leaf) or an
operand does, the change is recorded: the out-of-place op runs on a snapshot
of the old value, its result is written into the tensor's own storage, and the
tensor takes the result's place in the graph. Anything that saved the old
value sees the version change and refuses to backward, as in PyTorch.

Refused, with a clear error: a leaf that requires grad (PyTorch refuses it
too), and a tensor that shares storage with another tensor on the graph (a
view, or the base of one), whose views' graphs would not see the change
(PyTorch rebases them; see the Differences page).
"""
from __future__ import annotations

import numpy as np

from ..array.devices import DeviceMismatchError
from ..tape.mode import is_grad_enabled
from ..tape.op import Op, apply, constant_like
from ..tape.tensor import Tensor, plain_key, version_is_shared


class IndexPut(Op):
    """``x`` with ``x[key] = v``: the out-of-place form of item assignment."""
    name = "index_put"
    saves = ()

    @staticmethod
    def forward(F, x, v, key):
        out = x.copy()
        out[key] = v
        return out

    @staticmethod
    def vjp(F, g, out, x, v, key, needs):
        gx = None
        if needs[0]:
            gx = g.copy()
            gx[key] = 0
        return gx, (g[key] if needs[1] else None)


def _snapshot(t: Tensor, copy: bool) -> Tensor:
    """The tensor's current value as a separate tensor in its place on the graph; a copy when the
    recorded op saves it (the write that follows would change it under the VJP)."""
    old = object.__new__(Tensor)
    old.array = t.array.copy() if copy else t.array
    old.backend, old.grad, old._grad_slot = t.backend, None, None
    old.requires_grad, old._node = t.requires_grad, t._node
    # sharing the counter when not copied: a VJP reading the overwritten value then fails loudly
    old._version = [0] if copy else t._version
    return old


def needs_recording(t: Tensor, operands) -> bool:
    """Whether an in-place change of ``t`` by ``operands`` must be recorded on the graph."""
    return is_grad_enabled() and (t.requires_grad or any(isinstance(o, Tensor) and o.requires_grad
                                                         for o in operands))


def record_inplace(t: Tensor, what: str, compute, copy: bool) -> Tensor:
    """Change ``t`` in place to ``compute(old)`` (built from recorded ops) and put it on the graph."""
    if t.requires_grad and t._node is None:
        t._check_inplace(what)  # a leaf: refused, as in PyTorch
    if version_is_shared(t):
        raise RuntimeError(f"{what}: in-place change of a tensor (shape {t.shape}) that shares its storage with "
                           "another tensor on the graph (a view, or the base of one): the other's gradient would "
                           "miss it; clone() the tensor first")
    r = compute(_snapshot(t, copy))
    if r.shape != t.shape:
        raise RuntimeError(f"{what}: the result has shape {r.shape}, which does not match the tensor's {t.shape}")
    if r.dtype != t.dtype:
        if not np.can_cast(r.dtype, t.dtype, "same_kind"):
            raise RuntimeError(f"{what}: result type {r.dtype} can't be cast to the desired output type {t.dtype}")
        r = r.astype(t.dtype)
    t.array[...] = r.array
    if r._node is not None:  # the node before, for the ops recorded before this change (engine.producer)
        r._node.previous = t._node
    t._node, t.requires_grad = r._node, r.requires_grad
    t._version[0] += 1
    return t


def operand_array(t: Tensor, other):
    """``other``'s array for an in-place change of ``t`` (a number as it is); a tensor on another device raises."""
    if isinstance(other, Tensor):
        if other.device != t.device:
            raise DeviceMismatchError(f"in-place op between tensors on different devices: "
                                      f"{t.shape} on {t.device} and {other.shape} on {other.device}")
        return other.array
    return other


def _bump(t: Tensor) -> Tensor:
    t._version[0] += 1
    return t


def _arithmetic(name, ufunc_name, out_of_place, saves_self):
    def method(self, other):
        if needs_recording(self, (other,)):
            return record_inplace(self, name, lambda old: out_of_place(old, other), saves_self)
        ufunc = getattr(self.backend.xp, ufunc_name)
        ufunc(self.array, operand_array(self, other), out=self.array, casting="same_kind")
        return _bump(self)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In place: ``self = self {out_of_place.__doc__} other``; recorded when grad is involved."
    return method


def _add(a, b):
    """+"""
    return a + b


def _sub(a, b):
    """-"""
    return a - b


def _mul(a, b):
    """*"""
    return a * b


def _div(a, b):
    """/"""
    return a / b


def add_(self, other, alpha=1):
    """In place: ``self += alpha * other``."""
    return _iadd(self, other * alpha if alpha != 1 else other)


def sub_(self, other, alpha=1):
    """In place: ``self -= alpha * other``."""
    return _isub(self, other * alpha if alpha != 1 else other)


_iadd, _isub = _arithmetic("add_", "add", _add, False), _arithmetic("sub_", "subtract", _sub, False)
mul_, div_ = _arithmetic("mul_", "multiply", _mul, True), _arithmetic("div_", "divide", _div, True)


def clamp_(self, min=None, max=None):  # noqa: A002 - PyTorch's names
    """Clamp in place to ``[min, max]``."""
    if min is None and max is None:
        raise RuntimeError("clamp_: at least one of min and max must be given")
    if needs_recording(self, (min, max)):
        return record_inplace(self, "clamp_", lambda old: old.clamp(min, max), True)
    lo, hi = (operand_array(self, v) if v is not None else None for v in (min, max))
    self.backend.xp.clip(self.array, lo, hi, out=self.array)
    return _bump(self)


def _put(self, what, key, value):
    """``self[key] = value``, recorded when grad is involved."""
    if needs_recording(self, (value,)):
        v = constant_like(value, self)
        if v.device != self.device:
            v = v.to(self.device)
        return record_inplace(self, what, lambda old: apply(IndexPut, old, v, key=key), False)
    self.array[key] = operand_array(self, value)
    return _bump(self)


def __setitem__(self, key, value):  # noqa: N807 - the Tensor method
    _put(self, "__setitem__", plain_key(key), value)


def zero_(self):
    """Fill with zeros in place."""
    return _put(self, "zero_", Ellipsis, 0) if needs_recording(self, ()) else _fill(self, 0)


def fill_(self, value):
    """Fill with ``value`` (a number, or a 0-d tensor) in place."""
    if needs_recording(self, (value,)):
        return _put(self, "fill_", Ellipsis, value)
    return _fill(self, value.array if isinstance(value, Tensor) else value)


def _fill(self, value):
    self.array.fill(value)
    return _bump(self)


def copy_(self, src):
    """Copy ``src``'s values into this tensor (broadcasting, casting to this dtype, across devices)."""
    if needs_recording(self, (src,)):
        return _put(self, "copy_", Ellipsis, src)
    src_arr = src.array if isinstance(src, Tensor) and src.backend.is_host == self.backend.is_host \
        else self.backend.asarray(src.numpy() if isinstance(src, Tensor) else src)
    self.array[...] = src_arr
    return _bump(self)


METHODS = {"__setitem__": __setitem__, "zero_": zero_, "fill_": fill_, "copy_": copy_, "add_": add_, "sub_": sub_,
           "mul_": mul_, "div_": div_, "clamp_": clamp_, "__iadd__": _iadd, "__isub__": _isub, "__imul__": mul_,
           "__itruediv__": div_}

__all__ = ["IndexPut", "needs_recording", "operand_array", "record_inplace", "METHODS"]
