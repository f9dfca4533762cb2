"""The tape: grad mode, anomaly mode, graph nodes and the backward pass.

A :class:`Node` records one op application: the op, its input tensors, the
forward output (as a backend array, so the node never keeps its output tensor
alive), keyword arguments, and the versions of whatever the VJP will read.
Backward walks the graph in iterative topological order, so depth is limited
by memory, not by Python's recursion limit.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import threading

class _State(threading.local):
    # class attributes are each thread's defaults: plain attribute reads, no getattr fallback
    grad = True
    anomaly = False
    #: grad on and anomaly off, the common case (one attribute read per op instead of two)
    plain = True

    def set(self, grad=None, anomaly=None):
        if grad is not None:
            self.grad = grad
        if anomaly is not None:
            self.anomaly = anomaly
        self.plain = self.grad and not self.anomaly


_state = _State()


def is_grad_enabled() -> bool:
    """Whether ops are currently recorded on the tape."""
    return _state.grad


def _set_grad(mode: bool) -> bool:
    prev = is_grad_enabled()
    _state.set(grad=mode)
    return prev


class _GradMode(contextlib.ContextDecorator):
    mode = True

    def _recreate_cm(self):
        # a fresh instance per decorated call: the saved previous mode must not be shared
        # between recursive calls or threads (ContextDecorator reuses ``self`` by default)
        return type(self)()

    def __enter__(self):
        self._prev = _set_grad(self.mode)
        return self

    def __exit__(self, *exc):
        _set_grad(self._prev)
        return False


class no_grad(_GradMode):
    """Context manager and decorator that stops recording ops, as in PyTorch."""

    mode = False


class enable_grad(_GradMode):
    """Context manager and decorator that turns recording back on inside ``no_grad``."""

    mode = True


def is_anomaly_enabled() -> bool:
    return _state.anomaly


class detect_anomaly(contextlib.ContextDecorator):
    """Raise ``FloatingPointError`` at the first op whose output or gradient holds NaN/Inf.

    Costs a full scan of every op's output, so it is off by default.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _recreate_cm(self):
        return type(self)(self.enabled)

    def __enter__(self):
        self._prev = is_anomaly_enabled()
        _state.set(anomaly=self.enabled)
        return self

    def __exit__(self, *exc):
        _state.set(anomaly=self._prev)
        return False


def set_detect_anomaly(enabled: bool) -> None:
    """Turn anomaly detection on or off globally (for this thread)."""
    _state.set(anomaly=bool(enabled))


_sequence = itertools.count()


class Node:
    """One recorded op application (see the module docstring).

    ``seq`` numbers nodes in creation order. An op's inputs exist before it
    runs, so every node's inputs' nodes have smaller numbers: processing nodes
    by decreasing ``seq`` is a reverse topological order, which backward gets
    from a heap without a separate sort of the graph (as PyTorch's engine does
    with its sequence numbers).
    """

    __slots__ = ("op", "inputs", "out", "out_version", "kwargs", "saved_versions", "backend", "seq",
                 "__weakref__")

    def __init__(self, op, inputs, out, out_version, kwargs, backend):
        self.op = op
        self.inputs = inputs
        self.out = out
        self.out_version = out_version
        self.kwargs = kwargs
        self.backend = backend
        self.seq = next(_sequence)
        # Versions are checked at backward time: a saved tensor modified in place
        # in between would silently give wrong gradients.
        sv = [(t._version, t._version[0]) for t in inputs] if op.saves_inputs else []
        if op.saves_output:
            sv.append((out_version, out_version[0]))
        self.saved_versions = sv

    def __repr__(self):
        return f"<Node {self.op.name}>"


class GraphFreedError(RuntimeError):
    """Backward reached a node whose saved values were already freed."""


def _check_versions(node: Node) -> None:
    for box, v in node.saved_versions:
        if box[0] != v:
            shapes = ", ".join(str(tuple(t.shape)) for t in node.inputs)
            raise RuntimeError(
                f"one of the tensors needed by {node.op.name} (inputs of shapes {shapes}) was modified "
                f"by an in-place operation after it was saved: its version is {box[0]}, expected {v}. "
                "Use an out-of-place op, or clone the tensor before changing it.")


def _toposort(roots):
    """Nodes reachable from ``roots`` in reverse topological order, without recursion."""
    order, seen = [], set()
    for root in roots:
        if root is None or id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(root.inputs or ()))]
        while stack:
            node, it = stack[-1]
            for t in it:
                child = t._node
                if child is not None and id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(child.inputs or ())))
                    break
            else:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _raise_freed(node):
    raise GraphFreedError(
        f"trying to backward through the graph a second time (at {node.op.name}); its saved "
        "values were freed after the first backward. Pass retain_graph=True to the first call.")


def run_backward(outputs, grads, *, retain_graph=False, create_graph=False, inputs=None, accumulate=True):
    """Backpropagate ``grads`` from ``outputs``.

    With ``accumulate`` gradients add into leaves' ``.grad``; otherwise (``bg.grad``)
    the gradients of ``inputs`` are returned and nothing else is touched.

    Nodes come off a heap by decreasing ``seq`` (a reverse topological order, see
    :class:`Node`). This loop is the tape's per-node cost, most of a small graph's time,
    so the plain case (``.backward()``: accumulate, nothing captured, no higher-order
    graph) delivers leaf gradients inline and calls one- and two-input VJPs without
    packing their arguments.
    """
    capture = {}
    if inputs is not None:
        for i, t in enumerate(inputs):
            capture[id(t._node) if t._node is not None else id(t)] = i
    results = [None] * (len(inputs) if inputs is not None else 0)

    pending: dict[int, object] = {}  # node.seq -> gradient of its output
    heap = []
    for out, g in zip(outputs, grads):
        if out._node is None:
            if out.requires_grad:  # backward on a leaf itself
                _deliver(out, g, capture, results, accumulate, create_graph)
            continue
        key = out._node.seq
        if key in pending:
            pending[key] = pending[key] + g
        else:
            pending[key] = g
            heapq.heappush(heap, (-key, out._node))

    anomaly = _state.anomaly
    prev_mode = _set_grad(create_graph)
    if create_graph:
        from . import ops as tensor_namespace
    plain = accumulate and not capture and not create_graph
    pop, push = heapq.heappop, heapq.heappush
    try:
        while heap:
            node = pop(heap)[1]
            g = pending.pop(node.seq)
            node_inputs = node.inputs
            if node_inputs is None:
                _raise_freed(node)
            if capture and id(node) in capture:
                results[capture[id(node)]] = g
            for box, v in node.saved_versions:
                if box[0] != v:
                    _check_versions(node)  # raises, naming the op and shapes
            op = node.op
            kw = node.kwargs
            if create_graph:
                F, out = tensor_namespace, _TENSOR._from_node(node)
                in_grads = _call_vjp(op, F, g, out, node_inputs, kw, node_inputs, False)
            else:
                F, out = node.backend.F, node.out
                if op.wants_needs or len(node_inputs) > 2:
                    in_grads = _call_vjp(op, F, g, out, [t.array for t in node_inputs], kw, node_inputs, plain)
                elif len(node_inputs) == 1:
                    in_grads = op.vjp(F, g, out, node_inputs[0].array, **kw)
                else:
                    in_grads = op.vjp(F, g, out, node_inputs[0].array, node_inputs[1].array, **kw)
            for t, gi in zip(node_inputs, in_grads):
                if gi is None or not t.requires_grad:
                    continue
                arr = t.array
                if gi.shape != arr.shape:
                    gi = unbroadcast(F, gi, arr.shape)
                if anomaly:
                    _check_finite(node.backend.xp, gi.array if create_graph else gi, f"gradient of {op.name}")
                child = t._node
                if child is not None:
                    k = child.seq
                    prev = pending.get(k)
                    if prev is None:
                        pending[k] = gi
                        push(heap, (-k, child))
                    else:
                        pending[k] = prev + gi
                elif not plain:
                    _deliver(t, gi, capture, results, accumulate, create_graph)
                elif t.grad is not None:
                    ga = t.grad.array
                    ga += gi  # in place: flat gradient buffers are views and must stay so
                    t.grad._version[0] += 1
                elif op.writes_into and _claim_home(t, gi):
                    pass  # the VJP wrote the gradient straight into the leaf's flat slot
                elif GRAD_HOMES or gi.dtype != arr.dtype or not gi.ndim:
                    _deliver_first(t, gi)
                else:  # _deliver_first's common case, inlined: a copy (gi may alias other arrays)
                    t.grad = _TENSOR._make(gi.copy(), t.backend)
            if not retain_graph:
                node.inputs = None
                node.out = None
    finally:
        _set_grad(prev_mode)
    return results


def _call_vjp(op, F, g, out, xs, kw, node_inputs, plain):
    """``op.vjp`` with ``needs`` (and, in plain backward, ``into``) for the ops that take them."""
    if not op.wants_needs:
        return op.vjp(F, g, out, *xs, **kw)
    if plain and op.writes_into:
        kw = dict(kw, into=tuple(_home_slot(t) for t in node_inputs))
    return op.vjp(F, g, out, *xs, needs=tuple(t.requires_grad for t in node_inputs), **kw)


#: the Tensor class; tensor.py (which imports this module) sets it when it is loaded
_TENSOR = None

#: id(leaf) -> (weakref to the leaf, weakref to its gradient tensor): where a leaf's
#: first gradient after ``zero_grad`` is written, so flat gradient buffers stay flat.
GRAD_HOMES: dict = {}


def _home_slot(t):
    """The array a leaf's first gradient may be written into directly (its flat-buffer slot), or None."""
    if t._node is not None or not t.requires_grad or t.grad is not None:
        return None
    home = GRAD_HOMES.get(id(t))
    if home is None or home[0]() is not t:
        return None
    gt = home[1]()
    return None if gt is None else gt.array


def _claim_home(t, g) -> bool:
    """If ``g`` is ``t``'s flat slot (a VJP wrote into it), make it ``t.grad`` without a copy."""
    home = GRAD_HOMES.get(id(t))
    gt = home[1]() if home is not None and home[0]() is t else None
    if gt is None or g is not gt.array:
        return False
    gt._version[0] += 1
    t.grad = gt
    return True


def _deliver_first(leaf, g):
    """A leaf's first gradient in plain backward: into its flat-buffer slot if it has one,
    else a copy (the VJP's result may alias other arrays, and ``.grad`` is later
    accumulated into in place)."""
    home = GRAD_HOMES.get(id(leaf)) if GRAD_HOMES else None
    gt = home[1]() if home is not None and home[0]() is leaf else None
    if gt is not None:
        gt.array[...] = g
        leaf.grad = gt
        return
    g = g.copy() if g.dtype == leaf.array.dtype else g.astype(leaf.array.dtype)
    if not g.ndim:  # NumPy gives scalars for 0-d results; .grad must be an array
        g = leaf.backend.xp.asarray(g)
    leaf.grad = _TENSOR._make(g, leaf.backend)


def _deliver(leaf, g, capture, results, accumulate, create_graph):
    if capture:
        idx = capture.get(id(leaf))
        if idx is not None:
            results[idx] = g if results[idx] is None else results[idx] + g
    if not accumulate:
        return
    Tensor = _TENSOR
    if create_graph:
        gt = g if isinstance(g, Tensor) else Tensor._make(g, leaf.backend)
        if gt.dtype != leaf.dtype:
            gt = gt.astype(leaf.dtype)
        if leaf.grad is None:
            # a recorded copy: the VJP's result may be shared with other leaves (add sends
            # one tensor both ways) or be a read-only broadcast view, and .grad is later
            # accumulated into in place
            from .ops import clone

            leaf.grad = clone(gt)
        else:
            leaf.grad = leaf.grad + gt
        return
    if leaf.grad is None:
        _deliver_first(leaf, g)
    else:
        ga = leaf.grad.array
        ga += g  # in place: flat gradient buffers are views and must stay so
        leaf.grad._version[0] += 1


def unbroadcast(F, g, shape):
    """Sum ``g`` back down to ``shape``: the one place broadcasting is undone."""
    extra = g.ndim - len(shape)
    if extra > 0:
        g = F.sum(g, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = F.sum(g, axis=axes, keepdims=True)
    return g


def _check_finite(xp, arr, what):
    if arr.dtype.kind in "fc" and not bool(xp.isfinite(arr).all()):
        n_nan = int(xp.isnan(arr).sum())
        n_inf = int(xp.isinf(arr).sum())
        raise FloatingPointError(f"anomaly: {what} produced {n_nan} NaN and {n_inf} Inf "
                                 f"value(s) in an array of shape {tuple(arr.shape)}")


def check_forward_anomaly(xp, arr, op_name, inputs):
    shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
    _check_finite(xp, arr, f"op {op_name} (inputs of shapes {shapes})")

