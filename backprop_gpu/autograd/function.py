"""``bg.autograd.Function``: user-defined ops with PyTorch's API.

::

    class Cube(bg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 3 * x ** 2

    y = Cube.apply(x)

``forward`` runs with grad off on the tensors themselves; ``apply`` records one
node whose VJP calls ``backward`` with tensors. Tensors given to
``save_for_backward`` are version-checked like every op's saved inputs, and
under ``create_graph`` ``backward``'s own ops are recorded, so a ``backward``
written with differentiable ops gives higher-order gradients too.
"""
from __future__ import annotations

from ..tape.engine import Node
from ..tape.mode import no_grad, state
from ..tape.op import Op
from ..tape.tensor import Tensor


class FunctionCtx:
    """What ``forward`` hands to ``backward``: saved tensors and any attributes set on it."""

    def __init__(self, needs_input_grad: tuple):
        #: for each argument of ``forward``: whether it is a tensor that requires grad
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._non_differentiable = set()

    def save_for_backward(self, *tensors) -> None:
        """Keep ``tensors`` (or None) for ``backward``; changing one in place before then is an error."""
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward takes tensors or None, got {type(t).__name__}")
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple:
        """The tensors ``forward`` passed to ``save_for_backward``, in order."""
        return self._saved

    def mark_non_differentiable(self, *tensors) -> None:
        """Outputs that get no gradient (an index, a mask): they come out with ``requires_grad=False``."""
        self._non_differentiable.update(id(t) for t in tensors)


class _FunctionBackward(Op):
    """The recorded node of one ``Function.apply``: its VJP is the user's ``backward``."""

    name = "function"
    saves = ()

    @staticmethod
    def forward(F, *xs, ctx, fn, saved):  # pragma: no cover - apply runs the user's forward itself
        raise RuntimeError("a Function's forward runs through Function.apply")

    @staticmethod
    def vjp(F, g, out, *xs, needs, ctx, fn, saved):
        graph = F.records  # create_graph: g and the inputs are tensors, and backward's ops record
        grads = fn.backward(ctx, g if graph else Tensor._make(g, ctx._backend))
        grads = grads if isinstance(grads, tuple) else (grads,)
        if len(grads) != len(ctx.needs_input_grad):
            raise RuntimeError(f"function {fn.__name__}.backward returned an incorrect number of gradients "
                               f"(expected {len(ctx.needs_input_grad)}, got {len(grads)})")
        res = []
        for i, gi in zip(ctx._tensor_positions, (grads[i] for i in ctx._tensor_positions)):
            if gi is not None and not isinstance(gi, Tensor):
                raise TypeError(f"function {fn.__name__}.backward returned a {type(gi).__name__} as gradient {i}; "
                                "expected a tensor or None")
            res.append(gi if graph or gi is None else gi.array)
        return tuple(res)


class Function:
    """Base class of user-defined differentiable ops; see the module docstring."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        """Compute the outputs from the inputs; save what backward needs with ``ctx.save_for_backward``. Subclasses
        define it as a staticmethod."""
        raise NotImplementedError("a Function subclass defines forward(ctx, *args) as a staticmethod")

    @staticmethod
    def backward(ctx, *grad_outputs):
        """One gradient per input of ``forward`` (``None`` where none is needed), from the output's gradient.
        Subclasses define it as a staticmethod."""
        raise NotImplementedError("a Function subclass defines backward(ctx, *grad_outputs) as a staticmethod")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` and record ``backward`` as its VJP when an input tensor requires grad."""
        positions = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
        if not positions:
            raise TypeError(f"{cls.__name__}.apply needs at least one tensor argument")
        inputs = tuple(args[i] for i in positions)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = FunctionCtx(needs)
        ctx._tensor_positions = positions
        ctx._backend = inputs[0].backend
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if isinstance(out, (tuple, list)):
            raise NotImplementedError(f"{cls.__name__}.forward returned {len(out)} outputs; Functions with several "
                                      "outputs are not supported yet (return one tensor, or split into Functions)")
        if not isinstance(out, Tensor):
            raise TypeError(f"{cls.__name__}.forward must return a tensor, got {type(out).__name__}")
        if not (state.grad and any(needs)) or id(out) in ctx._non_differentiable:
            return out
        arr = out.array
        if any(arr is t.array for t in inputs):
            arr = arr.copy()  # forward returned an input: the output must be a tensor of its own
        res = Tensor._make(arr, out.backend)
        if res.dtype.kind not in "fc":
            return res
        res.requires_grad = True
        res._node = Node(_FunctionBackward, inputs, arr, res._version,
                         {"ctx": ctx, "fn": cls, "saved": tuple(t for t in ctx._saved if t is not None)},
                         out.backend, tuple(t.requires_grad for t in inputs))
        return res


__all__ = ["Function", "FunctionCtx"]
