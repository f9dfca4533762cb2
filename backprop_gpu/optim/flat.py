"""Flat parameter, gradient and state buffers.

A :class:`FlatGroup` gathers parameters of one backend and dtype into one
contiguous buffer and rebinds each parameter's array to a view of it. Their
gradients become views of a matching flat gradient buffer, so backward
accumulates into it in place and an optimizer step is one kernel launch over
the whole group, whatever the number of tensors. Optimizer state (m, v, ...)
is flat too.

Each parameter gets its slot of the flat gradient buffer as an attribute,
``p._grad_slot``. After ``zero_grad()`` gradients are ``None``, as in PyTorch;
the tape's ``deliver`` writes the next gradient into the slot. A parameter
whose ``.grad`` is still ``None`` at a step (it took no part in the loss, or
is frozen) keeps ``None``; :meth:`FlatGroup.sync` zeroes its slot and
:meth:`FlatGroup.has_grad` tells the optimizer to mask it out of the launch.
Nothing is registered globally: a slot lives and dies with its parameter.

Building a group rebinds each parameter's array to a view holding the same
values, so a graph recorded before the optimizer was built still
backpropagates correctly (its parameters' versions are not bumped).

Users may replace a parameter's storage (``p.data = ...``, ``module.to(...)``)
or its gradient (``p.grad = ...``). :meth:`FlatGroup.sync` notices and copies
the new values back into the buffer (same shape and device), or reports that
the group must be rebuilt (new shape, dtype or device).

Buffers are made in native byte order: a big-endian parameter (``'>f4'``) is
converted when its group is built, invisibly to correct programs. float16 and
bfloat16 groups keep their parameters and gradients in 16 bits and their
optimizer state in float32 (:attr:`FlatGroup.state_dtype`), with float32 master
weights beside it (:meth:`FlatGroup.master_weights`), which the optimizer's one
launch steps and rounds into the parameters. A dtype the fused
kernels cannot take (integers, complex, ...) is a TypeError before any
parameter is rebound.
"""
from __future__ import annotations

import sys

import numpy as np

from ..array.optim.precision import compute_dtype, is_low_precision, native
from ..tape.tensor import Tensor


class FlatGroup:
    """Parameters of one backend and dtype as views into one flat buffer."""

    def __init__(self, params: list[Tensor]):
        if not params:
            raise ValueError("a FlatGroup needs at least one parameter")
        b = params[0].backend
        dtype = native(params[0].dtype)
        for p in params:
            if p.backend.device != b.device or native(p.dtype) != dtype:
                raise ValueError(f"a FlatGroup holds one device and dtype; got {p.device}/{p.dtype} "
                                 f"beside {b.device}/{dtype}")
        xp = b.xp
        self.backend = b
        #: the parameters' and gradients' dtype, in native byte order
        self.dtype = dtype
        #: the optimizer state's dtype: float32 for float16/bfloat16 parameters, else ``dtype``
        self.state_dtype = compute_dtype(dtype)
        #: whether the parameters are float16/bfloat16, stepped through float32 master weights
        self.low = is_low_precision(dtype)
        self.params = list(params)
        self.offsets = []
        self.shapes = [p.shape for p in params]  # as flattened; a replaced parameter may differ
        n = 0
        for p in params:
            self.offsets.append((n, n + p.numel()))
            n += p.numel()
        self.numel = n
        self.data = xp.empty(n, dtype=dtype)
        self.grad = xp.zeros(n, dtype=dtype)
        self._views = []
        for p, (lo, hi) in zip(params, self.offsets):
            view = self.data[lo:hi].reshape(p.shape)
            view[...] = p.array
            gview = self.grad[lo:hi].reshape(p.shape)
            if p.grad is not None and p.grad.shape == p.shape:  # a stale grad of another shape is dropped
                gview[...] = p.grad.array
            p.array = view  # the same values: no version bump, a recorded graph stays valid
            slot = Tensor._make(gview, b)
            p._grad_slot = slot
            if p.grad is not None:
                p.grad = slot
            self._views.append((view, slot, gview))

    def new_state(self, fill: float = 0.0):
        """A flat state buffer the size of the group, of :attr:`state_dtype`."""
        return self.backend.xp.full(self.numel, fill, dtype=self.state_dtype)

    def master_weights(self):
        """A flat float32 copy of the parameters: master weights for a float16/bfloat16 group."""
        return self.data.astype(self.state_dtype)

    def slice_of(self, flat, i: int):
        """Parameter ``i``'s view of a flat buffer, in the parameter's shape."""
        lo, hi = self.offsets[i]
        return flat[lo:hi].reshape(self.shapes[i])

    def sync(self) -> bool:
        """Pull replaced parameter arrays or gradients back into the buffers.

        Returns False when a parameter changed shape, dtype or device, so the
        group has to be rebuilt. Cheap when nothing changed: identity checks only.
        """
        for i, (p, (view, gt, gview)) in enumerate(zip(self.params, self._views)):
            if p.array is not view:
                a = p.array
                if tuple(a.shape) != tuple(view.shape) or native(a.dtype) != self.dtype or \
                        p.backend.device != self.backend.device:
                    return False
                view[...] = a
                p.array = view
            if p._grad_slot is not gt:  # another optimizer took the parameter over: take it back
                p._grad_slot = gt
            if p.grad is not gt:
                g = p.grad
                if g is None:
                    gt.array.fill(0)  # no gradient: masked out of the step, and finite under the mask
                else:
                    if tuple(g.shape) != tuple(view.shape):
                        raise RuntimeError(f"parameter {i} of shape {tuple(view.shape)} was given a gradient "
                                           f"of shape {g.shape}")
                    gt.array[...] = g.array if g.backend.device == self.backend.device else \
                        self.backend.asarray(g.numpy())
                    p.grad = gt
            elif gt.array is not gview:  # someone assigned p.grad.data
                gview[...] = gt.array
                gt.array = gview
        return True

    def has_grad(self) -> tuple:
        """For each parameter, whether it has a gradient (after :meth:`sync`)."""
        return tuple(p.grad is not None for p in self.params)

    def element_mask(self, which) -> object:
        """A uint8 array over the buffer, 1 on the parameters ``which`` selects (booleans per parameter)."""
        host = np.zeros(self.numel, dtype=np.uint8)
        for on, (lo, hi) in zip(which, self.offsets):
            if on:
                host[lo:hi] = 1
        return self.backend.asarray(host)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients: to ``None`` (the next backward then writes each one into
        its slot of the flat buffer, no fill needed), or zero the buffer in one fill."""
        if set_to_none:
            for i, p in enumerate(self.params):
                g, p.grad = p.grad, None
                # the references a slot has here: _views, p._grad_slot, g and getrefcount's argument
                if g is not None and g is p._grad_slot and sys.getrefcount(g) > 4:
                    self._release(i, g)
        else:
            self.grad.fill(0)

    def _release(self, i: int, held) -> None:
        """The program kept parameter ``i``'s gradient (``g = p.grad``) past ``zero_grad``: as in torch,
        where the next backward makes a new tensor, it keeps its values. It gets a copy of them, and
        the slot a new tensor object over the buffer."""
        held.array = held.array.copy()
        view, _, gview = self._views[i]
        slot = Tensor._make(gview, self.backend)
        self.params[i]._grad_slot = slot
        self._views[i] = (view, slot, gview)

    def bump_versions(self, which=None) -> None:
        """Mark the parameters (all, or those ``which`` selects) as changed in place by a step."""
        for i, p in enumerate(self.params):
            if which is None or which[i]:
                p._version[0] += 1
