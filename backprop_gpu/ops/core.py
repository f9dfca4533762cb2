"""How an op is declared and applied.

An op is a class with two static methods side by side:

* ``forward(xp, *arrays, **kw)`` computes the output array with the backend's
  array module (ops that set ``forward_gets_namespace`` get the backend's array
  namespace ``F`` instead, for its fused kernels);
* ``vjp(F, g, out, *inputs, **kw)`` returns one gradient per input (or ``None``);
  ops that set ``wants_needs`` also get ``needs``, which inputs require grad.
  ``F`` is an array namespace in plain backward and :mod:`backprop_gpu.ops` in
  ``create_graph`` mode, so one VJP gives both first- and higher-order gradients.

Gradients are summed back to each input's shape by the engine
(:func:`backprop_gpu.autograd.unbroadcast`), never inside an op.
"""
from __future__ import annotations

import numbers

from .. import autograd
from ..tensor import Tensor


class DeviceMismatchError(RuntimeError):
    """An op was given tensors on different devices."""


class Op:
    name = "op"
    #: whether the VJP reads the inputs (drives the in-place version check)
    saves_inputs = True
    #: whether the VJP reads the forward output
    saves_output = False
    #: ops with integer or boolean outputs record nothing
    differentiable = True
    #: whether vjp takes ``needs``, a tuple saying which inputs require grad
    wants_needs = False
    #: whether vjp (with ``wants_needs``) also takes ``into``: per input, an array its
    #: gradient may be written into (a leaf's empty flat-buffer slot) or None; plain
    #: backward only, and the VJP returns that very array when it used it
    writes_into = False
    #: whether forward gets the backend's array namespace ``F`` (``xp`` plus fused kernels
    #: such as ``F.bias_relu_``, which a backend may compile) instead of ``xp``
    forward_gets_namespace = False

    @staticmethod
    def forward(xp, *arrays, **kw):  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def vjp(F, g, out, *inputs, **kw):  # pragma: no cover - interface
        raise NotImplementedError


_new = object.__new__


def apply(op, *inputs: Tensor, **kw) -> Tensor:
    """Run ``op`` forward and, when grad mode is on and an input requires grad, record it."""
    x0 = inputs[0]
    b = x0.backend
    xp = b.F if op.forward_gets_namespace else b.xp
    n = len(inputs)
    # one and two inputs spelled out: this runs once per op, and most of a small graph's cost
    # is such Python overhead
    if n == 1:
        record = x0.requires_grad
        out = op.forward(xp, x0.array, **kw)
    elif n == 2:
        x1 = inputs[1]
        if x1.backend is not b and x1.backend.device != b.device:
            _devices_differ(op, inputs)
        record = x0.requires_grad or x1.requires_grad
        out = op.forward(xp, x0.array, x1.array, **kw)
    else:
        record = False
        for t in inputs:
            if t.backend is not b and t.backend.device != b.device:
                _devices_differ(op, inputs)
            if t.requires_grad:
                record = True
        out = op.forward(xp, *[t.array for t in inputs], **kw)
    if not out.ndim:  # NumPy returns scalars for 0-d results: keep arrays (in-place ops, .grad)
        out = b.xp.asarray(out)
    state = autograd._state
    if not state.plain:
        if state.anomaly:
            autograd.check_forward_anomaly(b.xp, out, op.name, inputs)
        record = record and state.grad
    # Tensor._make, inlined
    res = _new(Tensor)
    res.array = out
    res.backend = b
    res.grad = None
    res._version = version = [0]
    if record and op.differentiable:
        res.requires_grad = True
        res._node = autograd.Node(op, inputs, out, version, kw, b)
    else:
        res.requires_grad = False
        res._node = None
    return res


def _devices_differ(op, inputs):
    raise DeviceMismatchError(f"{op.name}: tensors on different devices: " + ", ".join(
        f"{tuple(x.shape)} on {x.device} ({x.backend.name})" for x in inputs))


def share_version_if_view(res: Tensor, x: Tensor) -> Tensor:
    """Give ``res`` the version counter of ``x`` when its array is a view of ``x``'s storage.

    A tensor saved for backward is then seen as modified whether the in-place change
    went through it or through any view of the same storage (as PyTorch's views do).
    """
    base = res.array.base
    if base is not None and (base is x.array or base is x.array.base):
        res._version = x._version
        if res._node is not None:
            res._node.out_version = x._version
    return res


def constant_like(x, ref: Tensor) -> Tensor:
    """``x`` as a tensor on ``ref``'s backend. Python scalars take ``ref``'s dtype when
    it is floating (so ``t * 2`` keeps float32); other data keeps its own dtype."""
    if isinstance(x, Tensor):
        return x
    xp = ref.backend.xp
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        if ref.dtype.kind in "fc" or isinstance(x, numbers.Integral):
            arr = xp.asarray(x, dtype=ref.dtype if ref.dtype.kind != "b" else None)
        else:
            arr = xp.asarray(x, dtype="float32")
        return Tensor._make(arr, ref.backend)
    return Tensor._make(ref.backend.asarray(x), ref.backend)


def binary(op, a, b, **kw) -> Tensor:
    """Apply a two-input op, turning a non-tensor operand into a constant like the other."""
    if not isinstance(a, Tensor):
        a = constant_like(a, b)
    elif not isinstance(b, Tensor):
        b = constant_like(b, a)
    try:
        return apply(op, a, b, **kw)
    except ValueError as e:
        if "broadcast" not in str(e):
            raise
        raise ValueError(f"{op.name}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


def normalize_axis(axis, ndim):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor with {ndim} dimension(s)")
        out.append(a % max(ndim, 1))
    return tuple(sorted(out))
