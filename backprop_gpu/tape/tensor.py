"""The Tensor: one backend array plus what the tape needs to differentiate it.

Operators and math methods (``+``, ``@``, ``.sum()``, ``.relu()``, ``.to()``,
...) are installed by :mod:`backprop_gpu.ops` from its op tables, where each
op's forward and VJP sit side by side.
"""
from __future__ import annotations


import copy
import weakref

import numpy as np

from ..array import Backend, get_backend
from ..array.devices import DeviceMismatchError
from ..array.dtypes import is_differentiable
from . import engine, hooks
from .mode import is_grad_enabled

float32 = np.dtype("float32")
float64 = np.dtype("float64")
float16 = np.dtype("float16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")
int8, int16, uint8 = np.dtype("int8"), np.dtype("int16"), np.dtype("uint8")
#: PyTorch's other names (``bg.float``, ``bg.int`` and ``bg.bool`` are set in the package itself)
long, half, double = int64, float16, float64


_default = {"float": float32}


def get_default_dtype() -> np.dtype:
    """The floating dtype of factories and Python floats (float32 unless set), as
    ``torch.get_default_dtype``."""
    return _default["float"]


def set_default_dtype(dtype) -> None:
    """Make ``dtype`` (float32 or float64; float16 too) the floating default, as
    ``torch.set_default_dtype``."""
    d = np.dtype(dtype)
    if d not in (float16, float32, float64):
        raise TypeError(f"set_default_dtype takes a floating dtype (float16, float32, float64), got {d}")
    _default["float"] = d


def _default_dtype_for(data):
    """dtype for host data that carries none: floats → the default float dtype (float32), ints →
    int64, bools → bool."""
    arr = np.asarray(data)
    if arr.dtype.kind == "f":
        return _default["float"]
    if arr.dtype.kind in "iu":
        return int64
    if arr.dtype.kind == "b":
        return bool_
    raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}")


class Size(tuple):
    """PyTorch's ``torch.Size``: a tensor's shape, a tuple of ints."""

    def numel(self) -> int:
        """The number of elements of a tensor of this shape (the product of the sizes)."""
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self):
        return f"Size({list(self)})"


class Tensor:
    """A multi-dimensional array on one backend, recorded on the tape when it requires grad.

    Attributes:
        array: the backend array (``numpy.ndarray`` or ``cupy.ndarray``).
        backend: the :class:`~backprop_gpu.array.Backend` that owns the array.
        requires_grad: whether gradients are computed for this tensor.
        grad: the accumulated gradient (a Tensor) of a leaf, or ``None``.
    """

    __slots__ = ("array", "backend", "requires_grad", "grad", "_grad_slot", "_node", "_version", "_hooks",
                 "_retains_grad", "_post_accumulate_hooks", "__weakref__")
    __array_ufunc__ = None  # make NumPy defer to our reflected operators

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        b = get_backend(device) if device is not None else (
            data.backend if isinstance(data, Tensor) else get_backend(None))
        if isinstance(data, Tensor):
            arr = b.asarray(data.array if data.backend is b else data.backend.to_host(data.array),
                            dtype=dtype)
            arr = arr.copy() if arr is data.array else arr
        else:
            if dtype is None and not hasattr(data, "dtype"):
                dtype = _default_dtype_for(data)
            if b.is_host and not isinstance(data, np.ndarray) and hasattr(data, "__cuda_array_interface__"):
                data = data.get()  # a CuPy array headed to the CPU
            arr = b.asarray(data, dtype=dtype)
        self.array = arr
        self.backend = b
        self.grad = None
        self._grad_slot = None
        self._node = None
        self._version = [0]
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, array, backend: Backend, requires_grad: bool = False, node=None):
        """Fast constructor for internal use: no conversion, no checks."""
        t = object.__new__(cls)
        t.array = array
        t.backend = backend
        t.requires_grad = requires_grad
        t.grad = None
        t._grad_slot = None
        t._node = node
        t._version = [0]
        return t

    @classmethod
    def _from_node(cls, node):
        t = cls._make(node.out, node.backend, True, node)
        t._version = node.out_version
        return t

    # -- metadata -------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The shape, a tuple of ints (NumPy's spelling of :meth:`size`)."""
        return tuple(self.array.shape)

    @property
    def dtype(self):
        """The element type, a ``numpy.dtype`` (``bg.float32`` is ``numpy.dtype('float32')``)."""
        return self.array.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.array.ndim

    def size(self, dim=None):
        """PyTorch's ``size()``: the shape as a :class:`Size` (a tuple), or with ``dim`` the length of
        that dimension. (NumPy's ``.size``, the element count, is :meth:`numel`.)"""
        if dim is None:
            return Size(self.array.shape)
        nd = self.array.ndim
        if not -max(nd, 1) <= dim < max(nd, 1):
            raise IndexError(f"dimension {dim} is out of range for a tensor with {nd} dimension(s)")
        return self.array.shape[dim]

    def numel(self) -> int:
        """The number of elements."""
        return int(self.array.size)

    def dim(self) -> int:
        """The number of dimensions (PyTorch's name for :attr:`ndim`)."""
        return self.ndim

    @property
    def device(self):
        """The :class:`~backprop_gpu.Device` the tensor lives on (``device.type`` is ``'cpu'`` or ``'cuda'``)."""
        return self.backend.device

    @property
    def is_leaf(self) -> bool:
        """Whether the tensor was made by the user rather than recorded from an op."""
        return self._node is None

    @property
    def grad_fn(self):
        """The graph node that made this tensor, or ``None`` for a leaf."""
        return self._node

    def __dlpack__(self, *, stream=None, **kwargs):
        """The DLPack capsule of this tensor's memory (``torch.from_dlpack(t)``, ``np.from_dlpack(t)``
        share it); a tensor that requires grad must be detached first, as in torch."""
        if self.requires_grad:
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return self.array.__dlpack__(**kwargs) if stream is None else self.array.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient each time backward computes it; a returned
        tensor replaces the gradient. On a leaf it runs before the gradient is accumulated into
        ``.grad``. Returns a handle whose ``remove()`` unregisters it (``torch.Tensor.register_hook``)."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        return hooks.add(self if self._node is None else self._node, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` once backward has accumulated this leaf's whole gradient into ``.grad``,
        while the rest of the graph is still being differentiated (as
        ``torch.Tensor.register_post_accumulate_grad_hook``; the hook returns nothing). Not run by
        ``bg.autograd.grad``, which accumulates nothing. Returns a handle whose ``remove()`` unregisters it."""
        if self._node is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        return hooks.add_post_accumulate(self, hook)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward (a no-op on a leaf)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that doesn't require gradient")
        if self._node is None or getattr(self, "_retains_grad", False):
            return
        ref = weakref.ref(self)

        def keep(g):
            t = ref()
            if t is not None:
                t.grad = g.detach().clone() if t.grad is None else t.grad + g.detach()
        hooks.add(self._node, keep)
        self._retains_grad = True

    @property
    def retains_grad(self) -> bool:
        """Whether :meth:`retain_grad` was called on this non-leaf tensor."""
        return self._node is not None and getattr(self, "_retains_grad", False)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.numpy(), separator=", ", precision=4, prefix="tensor(")
        dev = "" if self.device.type == "cpu" else f", device='{self.device}'"
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    def __bool__(self):
        if self.array.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __hash__(self):
        return id(self)

    # -- host access ----------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the values (also for tensors that require grad)."""
        return self.backend.to_host(self.array)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.array.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        """The values as nested Python lists (a Python number for a 0-d tensor)."""
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.array.size != 1:
            raise TypeError(f"only integer tensors of one element can be used as an index, "
                            f"got dtype {self.dtype} shape {self.shape}")
        return int(self.item())

    # -- devices ----------------------------------------------------------------
    def cpu(self):
        """This tensor on the CPU (``self`` if already there)."""
        return self if self.device.type == "cpu" else self.to("cpu")

    def cuda(self, index: int = 0):
        """This tensor on GPU ``index`` (``self.to(f"cuda:{index}")``)."""
        return self.to(f"cuda:{index}")

    def float(self):
        """``self.to(dtype=float32)``."""
        return self.to(dtype=float32)

    def double(self):
        """``self.to(dtype=float64)``."""
        return self.to(dtype=float64)

    def long(self):
        """``self.to(dtype=int64)``."""
        return self.to(dtype=int64)

    def int(self):
        """``self.to(dtype=int32)``."""
        return self.to(dtype=int32)

    def half(self):
        """``self.to(dtype=float16)``."""
        return self.to(dtype=float16)

    def bool(self):
        """``self.to(dtype=bool)``."""
        return self.to(dtype=bool_)

    def type(self, dtype=None):
        """``dtype=None``: the type's name (``"backprop_gpu.float32"``); else :meth:`to` that dtype."""
        return f"backprop_gpu.{self.dtype}" if dtype is None else self.to(dtype=dtype)

    def is_contiguous(self) -> bool:
        """Whether the storage is in row-major (C) order."""
        return bool(self.array.flags.c_contiguous)

    def contiguous(self):
        """``self`` when its storage is in row-major order, else a recorded copy that is."""
        return self if self.is_contiguous() else self.clone()

    # -- factories like this tensor (dtype and device) ------------------------
    def new_tensor(self, data, dtype=None, requires_grad=False):
        """A new leaf tensor from ``data``, with this tensor's dtype (unless given) and device."""
        return Tensor(data.numpy() if isinstance(data, Tensor) else data, dtype=dtype or self.dtype,
                      device=self.backend, requires_grad=requires_grad)

    def _new_filled(self, size, fill, dtype, requires_grad):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], (int, np.integer)) else size
        arr = self.backend.xp.full(tuple(int(s) for s in shape), fill, dtype=np.dtype(dtype or self.dtype))
        return Tensor._make(arr, self.backend).requires_grad_(requires_grad)

    def new_zeros(self, *size, dtype=None, requires_grad=False):
        """Zeros of shape ``size``, with this tensor's dtype (unless given) and device."""
        return self._new_filled(size, 0, dtype, requires_grad)

    def new_ones(self, *size, dtype=None, requires_grad=False):
        """Ones of shape ``size``, with this tensor's dtype (unless given) and device."""
        return self._new_filled(size, 1, dtype, requires_grad)

    def new_full(self, size, fill_value, dtype=None, requires_grad=False):
        """``fill_value`` in shape ``size``, with this tensor's dtype (unless given) and device."""
        return self._new_filled((size,), fill_value, dtype, requires_grad)

    def new_empty(self, *size, dtype=None, requires_grad=False):
        """A tensor of shape ``size`` with this tensor's dtype (unless given) and device (zero-filled here)."""
        return self._new_filled(size, 0, dtype, requires_grad)

    # -- copying and pickling ---------------------------------------------------
    def __deepcopy__(self, memo):
        """A leaf copy with its own storage and gradient, on the same device, outside any optimizer's
        flat buffer (``copy.deepcopy(model)`` for a best-so-far snapshot, as in PyTorch)."""
        if self._node is not None:
            raise RuntimeError("only leaf tensors (made by the user, not by an op) support deepcopy; "
                               "use .detach().clone()")
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.array = self.array.copy()
        new.backend = self.backend
        new.requires_grad = self.requires_grad
        new._grad_slot = None
        new._node = None
        new._version = [0]
        new.grad = None if self.grad is None else copy.deepcopy(self.grad, memo)
        return new

    def __reduce_ex__(self, protocol):
        if self._node is not None and self.requires_grad:
            raise RuntimeError("cannot pickle a tensor that requires grad and is not a leaf; pickle .detach()")
        return _rebuild, (type(self), self.numpy(), self.backend, self.requires_grad,
                          None if self.grad is None else self.grad.detach())

    # -- autograd -------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True):
        """Set ``requires_grad`` in place on a leaf; only floating tensors can require grad."""
        if requires_grad and not is_differentiable(self.dtype):
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.dtype}")
        if not requires_grad and self._node is not None:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """A tensor sharing this one's storage, cut from the graph."""
        t = Tensor._make(self.array, self.backend)
        t._version = self._version
        return t

    def detach_(self):
        """Cut this tensor from the graph in place: it becomes a leaf that does not require grad."""
        self._node = None
        self.requires_grad = False
        return self

    @property
    def data(self):
        """A detached tensor sharing storage (PyTorch's ``.data``); assigning replaces the storage."""
        return self.detach()

    @data.setter
    def data(self, value):
        arr = value.array if isinstance(value, Tensor) else self.backend.asarray(value)
        if isinstance(value, Tensor) and value.device != self.device:
            raise RuntimeError(f"cannot assign data on {value.device} to a tensor on {self.device}")
        self.array = arr
        self._version[0] += 1

    def backward(self, gradient=None, retain_graph: bool = False, create_graph: bool = False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is required for non-scalar tensors. The graph is freed
        afterwards unless ``retain_graph``; ``create_graph`` records the backward
        pass itself, for higher-order gradients.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad and has no grad_fn")
        if gradient is None and not create_graph and self.array.size == 1 and self.backend.is_host:
            g = _ones_like_scalar(self)  # a scalar loss: the common case, without _initial_grad's checks
        else:
            g = _initial_grad(self, gradient, create_graph)
        engine.run_backward([self], [g], retain_graph=retain_graph or create_graph,
                              create_graph=create_graph)

    # -- in-place ops (the methods are in ops/inplace.py: recording them needs the ops) ------
    def _check_inplace(self, what):
        if self.requires_grad and is_grad_enabled():
            kind = "a leaf tensor" if self._node is None else "a tensor"
            raise RuntimeError(f"{what}: in-place change of {kind} that requires grad while grad mode is on; "
                               "wrap it in bg.no_grad() or use an out-of-place op")

    def _bump(self):
        self._version[0] += 1
        return self


def _rebuild(cls, host, backend, requires_grad, grad):
    """A pickled tensor, back on its device (see :meth:`Tensor.__reduce_ex__`)."""
    t = object.__new__(cls)
    t.array = backend.asarray(host)
    t.backend = backend
    t.requires_grad = requires_grad
    t.grad = grad
    t._grad_slot = None
    t._node = None
    t._version = [0]
    return t


def version_is_shared(t: Tensor) -> bool:
    """Whether another live tensor shares ``t``'s storage as a view on the graph, or as its base (see
    :func:`~backprop_gpu.tape.op.share_version`)."""
    box = t._version
    if len(box) == 1:
        return False
    for ref in box[1].values():
        other = ref()
        if other is not None and other is not t:
            return True
    return False


def plain_key(key):
    """An index key with tensors replaced by backend arrays (validated by the array module itself)."""
    if isinstance(key, Tensor):
        return key.array
    if isinstance(key, tuple):
        return tuple(k.array if isinstance(k, Tensor) else k for k in key)
    if isinstance(key, list):
        return tuple(key) if any(isinstance(k, (slice, type(None), type(Ellipsis))) for k in key) else key
    return key


def _initial_grad(t: Tensor, gradient, create_graph: bool, fresh: bool = False):
    """The seed gradient of ``t``: ``gradient``, or 1 for a scalar. ``fresh`` (and ``create_graph``)
    rule out the shared read-only cached seed, for seeds that may be handed back to the user."""
    if gradient is None:
        if t.array.size != 1:
            raise RuntimeError(f"grad can be created implicitly only for scalar outputs; this tensor has "
                               f"shape {t.shape}: pass backward(gradient=...) of that shape")
        g = t.backend.xp.ones(t.array.shape, dtype=t.dtype) if fresh or create_graph else _ones_like_scalar(t)
    else:
        ga = gradient.array if isinstance(gradient, Tensor) else t.backend.asarray(gradient, dtype=t.dtype)
        if tuple(ga.shape) != t.shape:
            raise RuntimeError(f"gradient has shape {tuple(ga.shape)} but the tensor has shape {t.shape}")
        if isinstance(gradient, Tensor) and gradient.device != t.device:
            raise RuntimeError(f"gradient is on {gradient.device} but the tensor is on {t.device}")
        if ga.dtype != t.dtype:  # (only a Tensor can differ: other data was converted to t's dtype)
            gradient = gradient.astype(t.dtype)
            ga = gradient.array
        if create_graph and isinstance(gradient, Tensor):
            return gradient
        g = ga
    return Tensor._make(g, t.backend) if create_graph else g


_ONES: dict = {}


def _ones_like_scalar(t):
    """The seed gradient 1 of a scalar. Host arrays are cached read-only (nothing may write to
    a seed: the engine copies before accumulating in place), which saves an allocation per backward."""
    if not t.backend.is_host:
        return t.backend.xp.ones(t.array.shape, dtype=t.dtype)
    key = (t.array.shape, t.dtype)
    one = _ONES.get(key)
    if one is None:
        one = np.ones(t.array.shape, dtype=t.dtype)
        one.flags.writeable = False
        _ONES[key] = one
    return one


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, returned, not accumulated into ``.grad``.

    As ``torch.autograd.grad``: ``outputs`` and ``inputs`` are tensors or
    sequences of tensors; ``create_graph=True`` makes the result differentiable.
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins_given = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    slot = {}  # an input given twice gets its gradient twice
    for t in ins_given:
        slot.setdefault(id(t), len(slot))
    ins = list({id(t): t for t in ins_given}.values())
    if grad_outputs is None:
        grad_outputs = [None] * len(outs)
    else:
        grad_outputs = [grad_outputs] if isinstance(grad_outputs, Tensor) or grad_outputs is None \
            else list(grad_outputs)
    if len(grad_outputs) != len(outs):
        raise RuntimeError(f"grad requires one grad_output per output: got {len(grad_outputs)} grad_output(s) "
                           f"for {len(outs)} output(s)")
    for t in ins:
        if not t.requires_grad:
            raise RuntimeError(f"an input of shape {t.shape} does not require grad")
    for o in outs:
        if not o.requires_grad:
            raise RuntimeError(f"an output of shape {o.shape} does not require grad and has no grad_fn")
    gs = [_initial_grad(o, g, create_graph, fresh=True) for o, g in zip(outs, grad_outputs)]
    keep = create_graph if retain_graph is None else retain_graph
    res = engine.run_backward(outs, gs, retain_graph=keep, create_graph=create_graph,
                              inputs=ins, accumulate=False)
    out = []
    for t in ins_given:
        r = res[slot[id(t)]]
        if r is None:
            if not allow_unused:
                raise RuntimeError(f"an input of shape {t.shape} was not used in the graph; pass allow_unused=True")
            out.append(None)
        else:
            if not isinstance(r, Tensor):
                r = Tensor._make(r if r.ndim else t.backend.xp.asarray(r), t.backend)
            # as in PyTorch, a gradient has its input's dtype (mixed-dtype graphs compute wider)
            out.append(r if r.dtype == t.dtype else r.astype(t.dtype))
    return tuple(out)


def is_tensor(x) -> bool:
    """Whether ``x`` is a :class:`Tensor`."""
    return isinstance(x, Tensor)
