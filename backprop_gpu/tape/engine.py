"""The backward engine: graph nodes, the saved-tensor checks and one backward loop.

A :class:`Node` records one op application: the op, its input tensors, what
the op declared it saves (``Op.saves``) with the versions of those tensors,
the forward output when it is saved, and the keyword arguments. Backward pops
nodes from a heap by decreasing creation number (a reverse topological order:
an op's inputs always exist before it), calls each VJP with one calling
convention and hands leaf gradients to :func:`deliver`.

:func:`deliver` and :func:`empty_slots` are the only code that knows a leaf may
own a gradient slot (``Tensor._grad_slot``, a view into an optimizer's flat
gradient buffer): a leaf's first gradient goes there instead of into a new
array, written by the VJP itself when it declares ``into``. The engine imports
nothing from ``optim``.
"""
from __future__ import annotations

import heapq
import itertools

from . import hooks as _hooks_mod
from .mode import state

_sequence = itertools.count()

#: the differentiable namespace VJPs run on under ``create_graph`` (:mod:`backprop_gpu.ops`,
#: which registers itself with :func:`register_graph_namespace`)
_graph_namespace = None
#: whether VJPs get stand-ins for the inputs they did not declare in ``Op.saves`` (see :class:`Unsaved`)
_check_saves = False


def register_graph_namespace(namespace) -> None:
    """Set the namespace of recorded ops that VJPs use under ``create_graph=True``."""
    global _graph_namespace
    _graph_namespace = namespace


def check_saves(enabled: bool = True) -> bool:
    """Hand each VJP an :class:`Unsaved` stand-in for every input it did not declare it saves,
    so a VJP that reads one fails loudly. Returns the previous setting. The test suite runs with
    it on; it costs one small object per unsaved input per backward."""
    global _check_saves
    prev, _check_saves = _check_saves, bool(enabled)
    return prev


class Unsaved:
    """What a VJP sees of an input its op did not save: shape and dtype, no values."""

    __slots__ = ("shape", "dtype", "ndim", "size", "_what")
    __array_priority__ = 1e9

    def __init__(self, arr, what):
        self.shape, self.dtype, self.ndim = tuple(arr.shape), arr.dtype, len(arr.shape)
        n = 1
        for d in self.shape:  # a tensor's size() is torch's method, an array's .size the count
            n *= d
        self.size = n
        self._what = what

    def _refuse(self, *args, **kwargs):
        raise RuntimeError(f"{self._what} was read by the VJP but is not in the op's `saves`")

    __array__ = __array_ufunc__ = __array_function__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __pow__ = __rpow__ = __neg__ = __gt__ = __lt__ = __ge__ = __le__ = __getitem__ = __matmul__ = _refuse

    def __getattr__(self, name):
        self._refuse()


class Node:
    """One recorded op application (see the module docstring)."""

    # ``previous``: set only on the node of an in-place change, the node its tensor had before
    # (see :func:`producer`)
    __slots__ = ("op", "inputs", "out", "out_version", "kwargs", "backend", "seq", "needs", "saved_versions",
                 "previous", "_hooks", "__weakref__")

    def __init__(self, op, inputs, out, out_version, kwargs, backend, needs=None):
        self.op = op
        self.inputs = inputs
        self.kwargs = kwargs
        self.backend = backend
        self.seq = next(_sequence)
        # ``apply`` passes ``needs``: it has just read every input's requires_grad
        self.needs = tuple([t.requires_grad for t in inputs]) if needs is None else needs
        self.out_version = out_version
        if not (op._saves_any or kwargs):  # nothing to keep or check (add, sum, ...): the quick way out
            self.out = None
            self.saved_versions = ()
            return
        # the versions of what the VJP reads, checked at backward: a saved tensor changed in
        # place in between would silently give wrong gradients
        n = len(inputs)
        sv = []
        for i in op._fixed if op._last_fixed < n else op.saved_inputs(n):  # a loop: no comprehension frame
            v = inputs[i]._version
            sv.append((v, v[0]))
        if kwargs:
            sv.extend((box, box[0]) for box in op.saved_versions(kwargs))
        if op.saves_out:
            self.out = out
            sv.append((out_version, out_version[0]))
        else:
            self.out = None
        self.saved_versions = sv

    def __repr__(self):
        return f"<Node {self.op.name}>"

    def check_versions(self) -> None:
        for box, v in self.saved_versions:
            if box[0] != v:
                shapes = ", ".join(str(tuple(t.shape)) for t in self.inputs)
                raise RuntimeError(
                    f"one of the tensors needed by {self.op.name} (inputs of shapes {shapes}) was modified "
                    f"by an in-place operation after it was saved: its version is {box[0]}, expected {v}. "
                    "Use an out-of-place op, or clone the tensor before changing it.")

    def vjp_args(self, tensors, create_graph):
        """The VJP's positional inputs and ``out``: arrays (or, under ``create_graph``, tensors),
        with :class:`Unsaved` stand-ins for what the op does not save when saves are checked."""
        op = self.op
        xs = list(self.inputs) if create_graph else [t.array for t in self.inputs]
        out = None
        if op.saves_out:
            out = tensors._from_node(self) if create_graph else self.out
        if _check_saves:
            kept = set(op.saved_inputs(len(xs)))
            xs = [x if i in kept else Unsaved(x, f"input {i} of {op.name}") for i, x in enumerate(xs)]
        return xs, out


def producer(t, seq):
    """The node that made the value of ``t`` an op numbered ``seq`` read: ``t._node``, unless ``t``
    was changed in place after that op (an in-place change gives ``t`` a newer node, which keeps
    the one before as ``previous``)."""
    node = t._node
    while node is not None and node.seq > seq:
        node = node.previous
    return node


def graph_nodes(root):
    """Every node reachable from ``root`` (a node), in decreasing creation order: the order
    backward visits them."""
    seen, stack = {id(root): root}, [root]
    while stack:
        node = stack.pop()
        for t in node.inputs or ():
            n = producer(t, node.seq)
            if n is not None and id(n) not in seen:
                seen[id(n)] = n
                stack.append(n)
    return sorted(seen.values(), key=lambda n: -n.seq)


class GraphFreedError(RuntimeError):
    """Backward reached a node whose saved values were already freed."""


def run_backward(outputs, grads, *, retain_graph=False, create_graph=False, inputs=None, accumulate=True):
    """Backpropagate ``grads`` from ``outputs``.

    With ``accumulate`` gradients go into leaves' ``.grad`` (through :func:`deliver`);
    ``inputs`` (``bg.grad``) are tensors whose gradients are returned, in order.
    """
    Tensor = type(outputs[0])
    capture = {id(t._node) if t._node is not None else id(t): i for i, t in enumerate(inputs)} if inputs else None
    results = [None] * len(inputs or ())
    pending, heap = {}, []  # node.seq -> gradient of its output; (-seq, node)
    push = heapq.heappush
    plain = accumulate and not capture and not create_graph

    def leaf(t, g):
        if capture:
            i = capture.get(id(t))
            if i is not None:
                results[i] = g if results[i] is None else results[i] + g
        if accumulate:
            deliver(t, g, Tensor, create_graph)

    for out, g in zip(outputs, grads):
        if not out.requires_grad:
            continue
        node = out._node
        if node is None:
            leaf(out, g)
        elif node.seq in pending:
            pending[node.seq] = pending[node.seq] + g
        else:
            pending[node.seq] = g
            push(heap, (-node.seq, node))
    anomaly = state.anomaly
    special = create_graph or _check_saves  # VJPs get tensors, or stand-ins for unsaved inputs
    hooked = {} if _hooks_mod.registered else None  # id(leaf) -> [leaf, summed gradient] for hooked leaves
    # leaves with post-accumulate hooks: id -> [leaf, gradients (or Nones) still to come]
    post = _post_hook_counts(outputs) if accumulate and _hooks_mod.post_registered else None

    def complete(t):
        """``t``'s last gradient is in: its tensor hooks on their sum and ``.grad``, then its post hooks."""
        held = hooked.pop(id(t), None) if hooked else None
        if held is not None:
            g_t = _run_hooks(t._hooks, held[1], t, Tensor, create_graph)
            if plain:
                deliver(t, g_t, Tensor)
            else:
                leaf(t, g_t)
        _run_post_hooks(t)

    if post:
        for out in outputs:
            if out.requires_grad and out._node is None and _last_of(post, out):
                complete(out)
    pop = heapq.heappop
    prev_mode = state.grad
    if prev_mode != create_graph:  # set_grad, only when it changes something
        state.grad = bool(create_graph)
        state.plain = False  # grad off (or create_graph: nothing here reads plain)
    try:
        while heap:
            node = pop(heap)[1]
            g = pending.pop(node.seq)
            if node.inputs is None:
                raise GraphFreedError(
                    f"trying to backward through the graph a second time (at {node.op.name}); its saved values "
                    "were freed after the first backward. Pass retain_graph=True to the first call.")
            if hooked is not None and getattr(node, "_hooks", None):
                g = _run_hooks(node._hooks, g, node, Tensor, create_graph)
            if capture and id(node) in capture:
                results[capture[id(node)]] = g
            for box, v in node.saved_versions:
                if box[0] != v:
                    node.check_versions()  # raises, naming the op and shapes
            op, ins, kw = node.op, node.inputs, node.kwargs
            if special or kw or len(ins) > 2 or op._vjp_into:
                if special:
                    F = _graph_namespace if create_graph else node.backend.F
                    xs, out = node.vjp_args(Tensor, create_graph)
                else:
                    F, out, xs = node.backend.F, node.out, [t.array for t in ins]
                in_grads = op.call_vjp(F, g, out, xs, node.needs, kw, empty_slots(ins) if plain else None)
            # the common case spelled out: this loop is most of a small graph's backward, and a
            # call through *args or an empty **kwargs costs more than the VJP of a small array
            else:
                F = node.backend.F
                if len(ins) == 1:
                    in_grads = (op.vjp(F, g, node.out, ins[0].array, needs=node.needs) if op._vjp_needs
                                else op.vjp(F, g, node.out, ins[0].array))
                elif op._vjp_needs:
                    in_grads = op.vjp(F, g, node.out, ins[0].array, ins[1].array, needs=node.needs)
                else:
                    in_grads = op.vjp(F, g, node.out, ins[0].array, ins[1].array)
            seq = node.seq
            for t, gi, needed in zip(ins, in_grads, node.needs):
                if gi is None or not needed:  # needs: what required grad when the node was made
                    # a None still completes a leaf's count: torch runs its post hooks, gradient or not
                    if post and needed and t._node is None and _last_of(post, t):
                        complete(t)
                    continue
                if gi.shape != t.array.shape:  # the array's: Tensor.shape is a property call
                    gi = unbroadcast(F, gi, tuple(t.array.shape))
                if anomaly:
                    check_finite(node.backend.xp, gi.array if create_graph else gi, f"gradient of {node.op.name}")
                child = t._node
                if child is not None and child.seq > seq:  # changed in place after this node read it
                    child = producer(t, seq)
                if child is None:
                    if hooked is not None and getattr(t, "_hooks", None):  # summed first, then the hooks
                        held = hooked.get(id(t))
                        if held is None:
                            hooked[id(t)] = held = [t, gi]
                        else:
                            held[1] = held[1] + gi
                        if post and _last_of(post, t):
                            complete(t)
                        continue
                    if not plain:
                        leaf(t, gi)
                    elif t.grad is not None:  # deliver()'s two commonest cases, inlined
                        cur = t.grad
                        cur.array += gi
                        cur._version[0] += 1
                    elif t._grad_slot is None and gi.ndim and gi.dtype == t.array.dtype:
                        t.grad = Tensor._make(gi.copy(), t.backend)  # a copy: gi may alias other arrays
                    else:
                        deliver(t, gi, Tensor)
                    if post and _last_of(post, t):
                        complete(t)
                    continue
                k = child.seq
                prev = pending.get(k)
                if prev is None:
                    pending[k] = gi
                    push(heap, (-k, child))
                else:
                    pending[k] = prev + gi
            if not retain_graph:
                node.inputs = node.out = None
        for t, g in (hooked or {}).values():
            g = _run_hooks(t._hooks, g, t, Tensor, create_graph)
            if plain:
                deliver(t, g, Tensor)
            else:
                leaf(t, g)
            if post and post.pop(id(t), None) is not None:
                _run_post_hooks(t)
        if post:  # leaves below nodes that no gradient reached: their .grad is final now, as it stands
            for t, left in list(post.values()):
                if left > 0:
                    _run_post_hooks(t)
    finally:
        if state.grad != prev_mode:
            state.set(grad=prev_mode)  # recomputes plain
    return results


def _post_hook_counts(outputs) -> dict:
    """For each leaf with post-accumulate hooks that a backward from ``outputs`` reaches, how
    many gradients it will receive (one per use, as the engine delivers them)."""
    counts, seen, stack = {}, set(), []
    for out in outputs:
        if not out.requires_grad:
            continue
        if out._node is None:
            _count(counts, out)
        elif id(out._node) not in seen:
            seen.add(id(out._node))
            stack.append(out._node)
    while stack:
        node = stack.pop()
        for t, needed in zip(node.inputs or (), node.needs):
            if not needed:
                continue
            n = producer(t, node.seq)
            if n is None:
                _count(counts, t)
            elif id(n) not in seen:
                seen.add(id(n))
                stack.append(n)
    return counts


def _count(counts, t) -> None:
    if getattr(t, "_post_accumulate_hooks", None):
        c = counts.get(id(t))
        if c is None:
            counts[id(t)] = [t, 1]
        else:
            c[1] += 1


def _last_of(post, t) -> bool:
    """Count one of ``t``'s gradients (or a None in its place) in; whether it was the last."""
    c = post.get(id(t))
    if c is None:
        return False
    c[1] -= 1
    return c[1] == 0


def _run_post_hooks(t) -> None:
    for hook in list(t._post_accumulate_hooks.values()):
        hook(t)


def _run_hooks(hooks, g, owner, Tensor, create_graph):
    """A node's or leaf's gradient ``g`` through its hooks: they see (and may return) Tensors."""
    if create_graph:
        return _hooks_mod.run(hooks, g, g.shape, lambda a: a, lambda t: t)
    backend = owner.backend
    return _hooks_mod.run(hooks, g, g.shape, lambda a: Tensor._make(a, backend),
                          lambda t: t.array if isinstance(t, Tensor) else backend.asarray(t))


def empty_slots(inputs) -> tuple:
    """For each input, the array of its gradient slot when a VJP may write the input's first
    gradient there (``Op`` ``into``), else ``None``: a leaf whose ``.grad`` is None, that has a
    slot, and that appears once among the inputs (``F.linear(W, W)`` must not write both
    gradients into one slot)."""
    slots = []
    for t in inputs:
        s = t._grad_slot
        if s is None or t.grad is not None or t._node is not None or sum(u is t for u in inputs) > 1:
            slots.append(None)
        else:
            slots.append(s.array)
    return tuple(slots)


def deliver(leaf, g, Tensor, create_graph=False) -> None:
    """Add ``g`` into ``leaf.grad``: in place when there is one, else into the leaf's gradient
    slot (a view into an optimizer's flat buffer) when it has one, else as a new tensor."""
    if create_graph:
        gt = g if isinstance(g, Tensor) else Tensor._make(g, leaf.backend)
        if gt.dtype != leaf.dtype:
            gt = gt.astype(leaf.dtype)
        # a recorded copy first: the VJP's result may be shared with other leaves or be a
        # read-only broadcast view, and .grad is later accumulated into
        leaf.grad = gt.clone() if leaf.grad is None else leaf.grad + gt
        return
    cur = leaf.grad
    if cur is not None:
        cur.array += g  # in place: a flat buffer's slot must stay a view of it
        cur._version[0] += 1
        return
    slot = leaf._grad_slot
    if slot is not None:
        if g is not slot.array:  # else the VJP wrote it there itself (``into``)
            slot.array[...] = g
        slot._version[0] += 1
        leaf.grad = slot
        return
    arr = leaf.array
    g = g.copy() if g.dtype == arr.dtype else g.astype(arr.dtype)  # g may alias other arrays
    if not g.ndim:  # NumPy gives scalars for 0-d results; .grad must be an array
        g = leaf.backend.xp.asarray(g)
    leaf.grad = Tensor._make(g, leaf.backend)


def unbroadcast(F, g, shape):
    """Sum ``g`` back down to ``shape``: the one place broadcasting is undone."""
    extra = g.ndim - len(shape)
    if extra > 0:
        g = F.sum(g, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = F.sum(g, axis=axes, keepdims=True)
    return g


def check_finite(xp, arr, what):
    """Raise ``FloatingPointError`` if ``arr`` holds NaN or Inf (anomaly mode)."""
    if arr.dtype.kind in "fc" and not bool(xp.isfinite(arr).all()):
        n_nan = int(xp.isnan(arr).sum())
        n_inf = int(xp.isinf(arr).sum())
        raise FloatingPointError(f"anomaly: {what} produced {n_nan} NaN and {n_inf} Inf "
                                 f"value(s) in an array of shape {tuple(arr.shape)}")


def check_forward_anomaly(xp, arr, op_name, inputs):
    shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
    check_finite(xp, arr, f"op {op_name} (inputs of shapes {shapes})")


__all__ = ["Node", "GraphFreedError", "graph_nodes", "producer", "Unsaved", "run_backward", "deliver", "empty_slots",
           "unbroadcast",
           "check_saves", "register_graph_namespace", "check_finite", "check_forward_anomaly"]
