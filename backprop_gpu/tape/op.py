"""How an op is declared and applied: one calling convention for every op.

An op is a class with two static methods side by side and a declaration of
what its VJP reads::

    class Mul(Op):
        name = "mul"
        saves = ("a", "b")                   # forward's input names, and/or "out"
        forward = staticmethod(lambda F, a, b: a * b)
        vjp = staticmethod(lambda F, g, out, a, b, needs: (g * b, g * a))

* ``forward(F, *arrays, **kw)`` computes the output array with the backend's
  array namespace ``F`` (its ``xp`` plus the fused kernels of the hot ops);
* ``vjp(F, g, out, *inputs, needs, **kw)`` returns one gradient per input (or
  ``None``); ``needs`` says which inputs require a gradient, and is passed only to
  a VJP that declares it (most ignore it, and the keyword costs a call's worth of
  time per node). A VJP that also declares ``into`` gets, in plain backward, one
  array or ``None`` per input: the empty gradient slot of a leaf input (see
  :func:`~backprop_gpu.tape.engine.empty_slots`). It may write that input's
  gradient there and return the same array, which then becomes ``.grad``
  without a copy (a weight gradient straight out of its matrix product).
  Under ``create_graph`` ``into`` is ``None``. ``F`` is the array
  namespace in plain backward and :mod:`backprop_gpu.ops` under
  ``create_graph``, so one VJP gives first- and higher-order gradients.
* ``saves`` names what the VJP reads. The engine version-checks exactly those
  (and any tensor passed as a keyword argument), keeps ``out`` only when it is
  saved, and, with :func:`~backprop_gpu.tape.engine.check_saves` on, hands the VJP
  shape-only stand-ins for everything else. The name of a ``*args`` parameter
  stands for all of them.

Gradients are summed back to each input's shape by the engine
(:func:`~backprop_gpu.tape.engine.unbroadcast`), never inside an op.
"""
from __future__ import annotations

import inspect
import math
import numbers
import weakref

import numpy as np

from ..array.devices import DeviceMismatchError
from ..array.dtypes import is_floating
from . import engine
from .mode import state
from .tensor import Tensor, get_default_dtype


class Op:
    """Base of every op; see the module docstring."""

    name = "op"
    #: forward's input names (and/or ``"out"``) that the VJP reads
    saves: tuple = ()
    #: ops with integer or boolean outputs record nothing
    differentiable = True

    # derived from ``saves`` and forward's signature when the class is made
    saves_out = False
    _fixed: tuple = ()      # saved positions among the leading named inputs
    _n_named = 0            # how many named inputs forward takes before any ``*args``
    _saves_rest = False     # whether the ``*args`` inputs are all saved
    _last_fixed = -1        # the last of ``_fixed``, or a huge number when ``*args`` are saved
    _vjp_needs = True       # whether the VJP declares ``needs``
    _vjp_into = False       # whether it declares ``into`` (and then ``needs`` too)
    _saves_any = False      # whether the VJP reads any input or ``out``

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.forward is Op.forward:  # an abstract intermediate class
            return
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # after F
        named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        rest = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
        kw_names = {p.name for p in params if p.kind == p.KEYWORD_ONLY}
        unknown = set(cls.saves) - set(named) - {rest, "out"} - {None}
        if unknown:
            raise TypeError(f"{cls.__name__}.saves names {sorted(unknown)}, which are not inputs of forward "
                            f"(inputs: {named + ([rest] if rest else [])}; keyword arguments {sorted(kw_names)} "
                            "are always passed to the VJP)")
        cls.saves_out = "out" in cls.saves
        cls._n_named = len(named)
        cls._fixed = tuple(i for i, n in enumerate(named) if n in cls.saves)
        cls._saves_rest = rest is not None and rest in cls.saves
        cls._last_fixed = (1 << 62) if cls._saves_rest else (cls._fixed[-1] if cls._fixed else -1)
        cls._saves_any = bool(cls._fixed or cls._saves_rest or cls.saves_out)
        vjp = inspect.getattr_static(cls, "vjp")
        vjp = getattr(vjp, "__func__", vjp)  # staticmethod or classmethod: the function itself
        vjp_params = inspect.signature(vjp).parameters
        cls._vjp_needs = "needs" in vjp_params
        cls._vjp_into = "into" in vjp_params
        if cls._vjp_into and not cls._vjp_needs:
            raise TypeError(f"{cls.__name__}.vjp declares `into` but not `needs`: declare both")

    @classmethod
    def call_vjp(cls, F, g, out, xs, needs, kwargs, into=None):
        """``vjp`` with ``needs`` (and ``into``) when it declares them; the engine inlines this."""
        if cls._vjp_into:
            return cls.vjp(F, g, out, *xs, needs=needs, into=into, **kwargs)
        if cls._vjp_needs:
            return cls.vjp(F, g, out, *xs, needs=needs, **kwargs)
        return cls.vjp(F, g, out, *xs, **kwargs)

    @classmethod
    def saved_inputs(cls, n: int) -> tuple:
        """Positions of the saved inputs among ``n`` inputs (forward's later named parameters
        may be keyword arguments)."""
        if cls._saves_rest:
            return cls._fixed + tuple(range(cls._n_named, n))
        fixed = cls._fixed
        return fixed if not fixed or fixed[-1] < n else tuple(i for i in fixed if i < n)

    @staticmethod
    def saved_versions(kwargs) -> tuple:
        """Version counters of the tensors among the keyword arguments, also inside a tuple
        (an index key, say): the VJP reads them, so they are checked like saved inputs."""
        if not kwargs:
            return ()
        boxes = []
        for v in kwargs.values():
            if isinstance(v, Tensor):
                boxes.append(v._version)
            elif type(v) is tuple:
                boxes.extend(k._version for k in v if isinstance(k, Tensor))
        return boxes

    @staticmethod
    def forward(F, *arrays, **kw):  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def vjp(F, g, out, *inputs, needs, **kw):  # pragma: no cover - interface
        raise NotImplementedError


_new = object.__new__
_ONE_NEEDS = (True,)  # a recorded one-input op: its input requires grad


def apply(op, *inputs: Tensor, **kw) -> Tensor:
    """Run ``op`` forward and, when grad mode is on and an input requires grad, record it."""
    plain = state.plain  # read once: it also guards the anomaly and grad-mode checks below
    if not plain and state.cast is not None:  # autocast: its recorded casts of the inputs
        inputs = state.cast(op.name, inputs)
    x0 = inputs[0]
    b = x0.backend
    F = b.F
    n = len(inputs)
    # one and two inputs spelled out: this runs once per op, and most of a small graph's cost
    # is such Python overhead
    if n == 1:
        record = x0.requires_grad
        needs = _ONE_NEEDS
        out = op.forward(F, x0.array, **kw) if kw else op.forward(F, x0.array)  # an empty ** costs
    elif n == 2:
        x1 = inputs[1]
        if x1.backend is not b and x1.backend.device != b.device:
            _devices_differ(op, inputs)
        needs = (x0.requires_grad, x1.requires_grad)
        record = needs[0] or needs[1]
        out = op.forward(F, x0.array, x1.array, **kw) if kw else op.forward(F, x0.array, x1.array)
    else:
        for t in inputs:
            if t.backend is not b and t.backend.device != b.device:
                _devices_differ(op, inputs)
        needs = tuple([t.requires_grad for t in inputs])
        record = True in needs
        out = op.forward(F, *[t.array for t in inputs], **kw)
    if not out.ndim:  # NumPy returns scalars for 0-d results: keep arrays (in-place ops, .grad)
        out = b.xp.asarray(out)
    if not plain:
        if state.anomaly:
            engine.check_forward_anomaly(b.xp, out, op.name, inputs)
        record = record and state.grad
    # Tensor._make, inlined
    res = _new(Tensor)
    res.array = out
    res.backend = b
    res.grad = None
    res._grad_slot = None
    res._version = version = [0]
    if record and op.differentiable:
        res.requires_grad = True
        res._node = engine.Node(op, inputs, out, version, kw, b, needs)
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
            share_version(x, res)
    return res


def share_version(base: Tensor, view: Tensor) -> None:
    """Note that ``view`` (on the graph) and ``base`` share storage and version counter: while two
    of them are alive, an in-place change of one is refused rather than recorded
    (:func:`~backprop_gpu.tape.tensor.version_is_shared`)."""
    box = base._version
    if len(box) == 1:  # weak references by id: tensors compare elementwise, so no WeakSet
        box.append({id(base): weakref.ref(base)})
    box[1][id(view)] = weakref.ref(view)


def constant_like(x, ref: Tensor) -> Tensor:
    """``x`` as a tensor on ``ref``'s backend. Python scalars take ``ref``'s dtype when
    it is floating (so ``t * 2`` keeps float32); other data keeps its own dtype."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        if ref.dtype.kind in "fc" or isinstance(x, numbers.Integral) or is_floating(ref.dtype):  # bfloat16 too
            dtype = ref.dtype if ref.dtype.kind != "b" else None
        else:
            dtype = get_default_dtype()
        b = ref.backend
        arr = b.xp.asarray(x, dtype=dtype) if b.is_host else _device_scalar(b, x, dtype)
        return Tensor._make(arr, b)
    return Tensor._make(ref.backend.asarray(x), ref.backend)


#: 0-d device arrays of the Python scalars that met device tensors, by (backend, dtype, value):
#: a fresh one per op would be an allocation and a host-to-device copy each time (design.md: no
#: copies but the batch). Bounded, oldest dropped first; the arrays are never written (every op
#: taking a constant computes a new array).
_device_scalars: dict = {}
MAX_DEVICE_SCALARS = 512


def _device_scalar(backend, x, dtype):
    """``x`` as a 0-d array of ``dtype`` on ``backend``'s device, from the cache when it can be."""
    if isinstance(x, numbers.Integral):
        key = (backend, dtype, int(x), 0)
    elif isinstance(x, float) or isinstance(x, np.floating):
        if x != x:  # NaN: never equal to a key, so never cached
            return backend.asarray(x, dtype)
        key = (backend, dtype, float(x), math.copysign(1.0, x))  # -0.0 is a key of its own
    else:  # complex and other numbers: rare, made each time
        return backend.asarray(x, dtype)
    arr = _device_scalars.get(key)
    if arr is None:
        if len(_device_scalars) >= MAX_DEVICE_SCALARS:
            del _device_scalars[next(iter(_device_scalars))]
        arr = _device_scalars[key] = backend.asarray(x, dtype)
    return arr


def _float_for(t: Tensor, scalar) -> Tensor:
    """An integer tensor met by a Python float, as float32 (PyTorch's default dtype: ``int * 1.5``
    is float32 there, float64 under NumPy's promotion); anything else unchanged. An integer
    tensor never requires grad, so the cast loses no graph."""
    if isinstance(scalar, float) and t.dtype.kind in "iu":
        return Tensor._make(t.array.astype(get_default_dtype()), t.backend)
    return t


def binary(op, a, b, **kw) -> Tensor:
    """Apply a two-input op, turning a non-tensor operand into a constant like the other."""
    if not isinstance(a, Tensor):
        b = _float_for(b, a)
        a = constant_like(a, b)
    elif not isinstance(b, Tensor):
        a = _float_for(a, b)
        b = constant_like(b, a)
    try:
        return apply(op, a, b, **kw)
    except ValueError as e:
        if "broadcast" not in str(e):
            raise
        raise ValueError(f"{op.name}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


def normalize_axis(axis, ndim):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints; out-of-range or
    repeated axes raise ``IndexError``."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"dimension {a} is out of range for a tensor with {ndim} dimension(s) "
                             f"(expected to be in range [{-max(ndim, 1)}, {max(ndim, 1) - 1}])")
        out.append(a % max(ndim, 1))
    if len(set(out)) != len(out):
        raise IndexError(f"dimension {sorted(set(x for x in out if out.count(x) > 1))} appears more than once "
                         f"in {axes}")
    return tuple(sorted(out))


def alias(what: str, torch_value, torch_name: str, numpy_value, numpy_name: str, default=None):
    """One of PyTorch's ``dim``/``keepdim`` or NumPy's ``axis``/``keepdims`` spellings; both is an error."""
    if numpy_value is None:
        return default if torch_value is None else torch_value
    if torch_value is not None:
        raise TypeError(f"{what}() got both {torch_name}={torch_value!r} and {numpy_name}={numpy_value!r}; "
                        f"pass one")
    return numpy_value


__all__ = ["Op", "alias", "apply", "binary", "constant_like", "normalize_axis", "share_version_if_view",
           "share_version",
           "DeviceMismatchError"]
