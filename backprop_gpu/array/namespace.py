"""The namespace VJPs see in plain (first-order) backward: the backend's ``xp``
plus the few functions NumPy lacks or CuPy spells differently.

In ``create_graph`` mode VJPs get :mod:`backprop_gpu.ops` instead, whose
functions have the same names and signatures but record on the tape, so each
VJP is written once and serves both.

It also holds the fused kernels of the hot ops (:mod:`backprop_gpu.array.kernels.reference`,
the reference versions over ``xp``), which a backend may compile by subclassing
the namespace (the ``numba`` backend does).
"""
from __future__ import annotations

from .kernels.reference import Kernels


class ArrayNamespace(Kernels):
    """``xp`` plus fused kernels; see the module docstring."""

    #: VJPs test this to tell plain backward from ``create_graph`` (where ops record)
    records = False

    def __init__(self, backend):
        self._backend = backend
        self._xp = backend.xp

    def __getattr__(self, name):
        value = getattr(self._xp, name)
        setattr(self, name, value)  # cache: later lookups skip __getattr__
        return value

    def broadcast_to(self, x, shape):
        # Materialised rather than numpy.broadcast_to's view: that costs ~5 us of
        # Python per call, and the gradient is written out downstream anyway.
        if x.shape == shape:
            return x
        out = self._xp.empty(shape, dtype=x.dtype)
        out[...] = x
        return out

    def broadcast_view(self, x, shape):
        """``x`` broadcast to ``shape`` as a read-only view (the forward of ``broadcast_to``)."""
        return self._xp.broadcast_to(x, shape)

    def erf(self, x):
        return self._backend.erf(x)

    def sigmoid(self, x):
        # tanh form never overflows, unlike 1 / (1 + exp(-x))
        return 0.5 * (self._xp.tanh(0.5 * x) + 1)

    def one_hot(self, labels, num_classes, dtype):
        xp = self._xp
        out = xp.zeros((labels.size, num_classes), dtype=dtype)
        out[xp.arange(labels.size), labels.reshape(-1)] = 1
        return out.reshape(tuple(labels.shape) + (num_classes,))

    def index_backward(self, g, shape, key, out=None):
        """Gradient of ``x[key]``: ``g`` scattered (and summed on repeats) into zeros of ``shape``;
        into ``out`` (an array of that shape and ``g``'s dtype, zeroed first) when given: a
        parameter's empty gradient slot, so that the gradient is not copied there after."""
        if out is None:
            out = self._xp.zeros(shape, dtype=g.dtype)
        else:
            out.fill(0)
        if is_basic_index(key):
            out[key] = g  # a view: no element repeats, so plain assignment suffices
        else:
            self._backend.scatter_add(out, key, g)
        return out


def is_basic_index(key) -> bool:
    """Whether ``key`` uses only slices, integers, None and Ellipsis (no index arrays)."""
    parts = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (slice, int, type(None), type(Ellipsis))) for k in parts)
