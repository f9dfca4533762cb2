"""Parameter, Module and the containers, with PyTorch's semantics."""
from __future__ import annotations

import copy
from collections import OrderedDict, namedtuple

import numpy as np

from ..tape.hooks import RemovableHandle
from ..tape.mode import no_grad
from ..array import get_backend
from ..array.devices import gpu_array_device
from ..array.dtypes import is_floating, looks_like_dtype
from ..tape.tensor import Tensor


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as a learnable parameter (requires grad).

    ``Parameter(t)`` shares ``t``'s storage (and version counter), as PyTorch's does;
    ``Parameter(array_or_list)`` converts host data like :class:`~backprop_gpu.Tensor`.
    It is a Tensor in every op.
    """

    __slots__ = ()

    def __new__(cls, data=None, requires_grad: bool = True):
        if data is None:
            data = Tensor(np.zeros(0, np.float32))
        elif not isinstance(data, Tensor):
            data = Tensor(data)
        p = object.__new__(cls)
        p.array = data.array
        p.backend = data.backend
        p.grad = None
        p._grad_slot = None
        p._node = None
        p._version = data._version  # same storage, same counter (as ``detach``)
        p.requires_grad = False
        p.requires_grad_(requires_grad)
        return p

    def __init__(self, data=None, requires_grad: bool = True):
        pass  # everything happens in __new__, which shares data's storage

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        # the backend is a per-device singleton: copied arrays stay on the same one
        p = Parameter(Tensor._make(self.array.copy(), self.backend), self.requires_grad)
        if self.grad is not None:
            p.grad = Tensor._make(self.grad.array.copy(), self.grad.backend)
        memo[id(self)] = p
        return p

    __hash__ = Tensor.__hash__


#: what :meth:`Module.load_state_dict` returns, as PyTorch's ``_IncompatibleKeys``
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class _HookDict(dict):
    """A module's hooks by handle id (a dict subclass, so a handle can refer to it weakly)."""


class Module:
    """Base class for layers and models: tracks parameters, buffers and submodules.

    Assigning a :class:`Parameter` or a Module to an attribute registers it, in
    order, as in PyTorch; :meth:`register_buffer` registers non-learnable state
    (saved in :meth:`state_dict`). Subclasses call ``super().__init__()`` first
    and define :meth:`forward`; calling the module calls ``forward``.
    """

    training: bool

    def __init__(self):
        d = self.__dict__
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_modules"] = OrderedDict()
        d["training"] = True

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if params is None:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        buffers, modules = d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__} (a Parameter or None is expected); wrap it "
                                f"in nn.Parameter, or delete the attribute first")
            params[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} of "
                                f"{type(self).__name__} (a Tensor or None is expected)")
            buffers[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r} of "
                                f"{type(self).__name__} (a Module or None is expected)")
            modules[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """A non-learnable tensor saved in ``state_dict`` (e.g. BatchNorm's running stats)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        if "." in name or not name:
            raise KeyError(f"buffer name {name!r} must be non-empty and contain no '.'")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or an absent parameter, ``None``) under ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, "
                            f"got {type(param).__name__}")
        if "." in name or not name:
            raise KeyError(f"parameter name {name!r} must be non-empty and contain no '.'")
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Register ``module`` under ``name`` (what attribute assignment does)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got {type(module).__name__}")
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # -- traversal ------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module and every descendant, depth first, each once."""
        seen = set()

        def walk(name, m):
            if id(m) in seen:
                return
            seen.add(id(m))
            yield name, m
            for k, c in m._modules.items():
                if c is not None:
                    yield from walk(f"{name}.{k}" if name else k, c)

        return walk(prefix, self)

    def modules(self):
        """This module and every descendant, each once."""
        return (m for _, m in self.named_modules())

    def named_children(self):
        """(name, module) of the direct submodules, each once."""
        seen = set()
        for k, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield k, m

    def children(self):
        """The direct submodules, each once."""
        return (m for _, m in self.named_children())

    def _named_members(self, store: str, prefix: str, recurse: bool):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for k, t in m.__dict__[store].items():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield (f"{mname}.{k}" if mname else k), t

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(dotted name, parameter) pairs, each parameter once even if shared (first name wins)."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True):
        """Every parameter, each once, in registration order."""
        return (p for _, p in self._named_members("_parameters", "", recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        """(dotted name, buffer) pairs, each buffer once."""
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        """Every buffer (running statistics, ...), each once, in registration order."""
        return (b for _, b in self._named_members("_buffers", "", recurse))

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Total number of parameter scalars (shared parameters counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def apply(self, fn):
        """Call ``fn`` on every submodule (children first) and then on this module; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path ``target`` (``""`` is this module)."""
        m = self
        for part in target.split(".") if target else []:
            sub = m._modules.get(part)
            if sub is None:
                raise AttributeError(f"{type(m).__name__} has no submodule {part!r} (looking up {target!r})")
            m = sub
        return m

    # -- modes ------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout on, batch statistics) for this module and its descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) takes a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient to None (default, as PyTorch) or to zeros in place."""
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.array.fill(0)

    def requires_grad_(self, requires_grad: bool = True):
        """Set ``requires_grad`` on every parameter; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    # -- calling ------------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - interface
        """The computation; subclasses define it. Call the module itself (``model(x)``), which also runs its hooks."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    #: set on an instance by its first ``register_forward_*hook``: the one check a call makes
    _has_hooks = False

    def __call__(self, *args, **kwargs):
        if self._has_hooks and self._hooked():
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    def _hooked(self) -> bool:
        """Whether forward hooks are registered; once every one was removed, the flag is cleared
        again (so calls, and :class:`Sequential`'s fusion, take the quick path)."""
        d = self.__dict__
        if not d.get("_has_hooks"):
            return False
        if d.get("_forward_pre_hooks") or d.get("_forward_hooks"):
            return True
        d["_has_hooks"] = False
        return False

    def _call_with_hooks(self, args, kwargs):
        for hook in list(self.__dict__.get("_forward_pre_hooks", {}).values()):
            r = hook(self, args)
            if r is not None:
                args = r if isinstance(r, tuple) else (r,)
        out = self.forward(*args, **kwargs)
        for hook in list(self.__dict__.get("_forward_hooks", {}).values()):
            r = hook(self, args, out)
            if r is not None:
                out = r
        return out

    def _add_hook(self, kind: str, hook) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{kind[1:-1]} expects a callable, got {type(hook).__name__}")
        d = self.__dict__
        hooks = d.get(kind)
        if hooks is None:
            hooks = d[kind] = _HookDict()
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        d["_has_hooks"] = True
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args)`` before each ``forward``; a returned value (a tuple, or one
        value) replaces the positional arguments. Returns a handle with ``remove()``."""
        return self._add_hook("_forward_pre_hooks", hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after each ``forward``; a returned value replaces the
        output. Returns a handle with ``remove()`` (``torch.nn.Module.register_forward_hook``)."""
        return self._add_hook("_forward_hooks", hook)

    def fused_with(self, following: "Module"):
        """A function computing ``following(self(x))`` in fewer passes, or ``None``.

        :class:`Sequential` asks each module about the one after it; a layer that has a
        fused op for that pair (Linear + ReLU, BatchNorm + ReLU) answers with it. The
        answer must give the same values and gradients as the two modules in turn. It may
        have a ``fused_with`` of its own, which Sequential then asks about the next module
        (Linear + ReLU + Dropout).
        """
        return None

    def _is_exactly(self, cls) -> bool:
        """Whether this module is a ``cls`` itself: a subclass may do anything, so it never fuses."""
        return type(self) is cls

    # -- state ---------------------------------------------------------------------
    def _state_tensors(self) -> "OrderedDict[str, Tensor]":
        """Parameters then buffers of each module in turn (PyTorch's order), by dotted name. As in
        PyTorch, a module or tensor registered under several names appears under each of them
        (tied weights, ``Sequential(l, l)``), so torch's state_dicts load strictly."""
        out = OrderedDict()

        def walk(prefix, m):
            for store in (m._parameters, m._buffers):
                for k, t in store.items():
                    if t is not None:
                        out[prefix + k] = t
            for k, c in m._modules.items():
                if c is not None:
                    walk(f"{prefix}{k}.", c)
        walk("", self)
        return out

    def state_dict(self) -> "OrderedDict[str, Tensor]":
        """Parameters and buffers by dotted name, as detached tensors sharing storage.

        Copy them (or save them with :mod:`backprop_gpu.app.checkpoint`) to keep a snapshot:
        training modifies the shared storage in place.
        """
        return OrderedDict((k, t.detach()) for k, t in self._state_tensors().items())

    def _plan_load(self, state_dict, strict: bool):
        """Check ``state_dict`` against this module: ``(plan, missing, unexpected)`` where plan is
        [(tensor, new array)], or RuntimeError listing every problem. Converts but copies nothing."""
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"load_state_dict expects a mapping of names to tensors, got {type(state_dict).__name__}")
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        bad_shape, bad_value, plan = [], [], []
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            try:
                gpu = gpu_array_device(v)
                if gpu is not None:  # a raw CuPy array: a tensor on its GPU, never through np.asarray
                    v = Tensor(v, device=gpu)
                if isinstance(v, Tensor):
                    shape = v.shape
                    host = v.array if v.backend is t.backend or (v.backend.is_host and t.backend.is_host) \
                        else v.numpy()
                else:
                    host = np.asarray(v)
                    shape = tuple(host.shape)
                    if host.dtype.kind not in "biuf":
                        raise TypeError(f"dtype {host.dtype}")
            except Exception as e:  # noqa: BLE001 - reported with the key, below
                bad_value.append(f"{k}: {type(v).__name__} is not a tensor or array ({e})")
                continue
            if tuple(shape) != t.shape:
                bad_shape.append(f"{k}: checkpoint {tuple(shape)} vs model {t.shape}")
                continue
            plan.append((t, host))
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        if bad_shape:
            problems.append("shape mismatches: " + "; ".join(bad_shape))
        if bad_value:
            problems.append("bad values: " + "; ".join(bad_value))
        if problems:
            raise RuntimeError(f"error(s) loading state_dict for {type(self).__name__}, nothing was loaded: "
                               + " | ".join(problems))
        return plan, missing, unexpected

    def check_state_dict(self, state_dict, strict: bool = True):
        """``(missing, unexpected)`` keys of ``state_dict``; raises RuntimeError listing every
        problem (missing, unexpected, mis-shaped and unreadable entries). Loads nothing."""
        _, missing, unexpected = self._plan_load(state_dict, strict)
        return IncompatibleKeys(missing, unexpected)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values in place from ``state_dict`` (name → Tensor or array), all or nothing.

        Every problem (missing, unexpected, mis-shaped or unreadable entries) is found
        before anything is copied and reported together in one RuntimeError; nothing is
        loaded then. With ``strict=False`` missing and unexpected keys are allowed (and
        returned) but shapes must still match. Values are cast to each tensor's dtype and
        moved to its device, as torch's ``copy_`` does: float64 rounds to float32, integers
        become floats, and a float loaded into an integer buffer is truncated. Casting
        here is deliberate (it is how a float64 or half-precision state is loaded into a
        float32 model on purpose); :func:`backprop_gpu.app.checkpoint.restore` instead
        refuses any dtype that differs from the model's, since a resumed run's own
        checkpoint always has its dtypes. Copying in place keeps the Parameter objects, so an
        optimizer (whose flat buffers the parameters are views of) sees the new values.

        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        plan, missing, unexpected = self._plan_load(state_dict, strict)
        staged = []
        for t, host in plan:  # convert everything first: a failure here still loads nothing
            try:
                arr = host if isinstance(host, type(t.array)) else t.backend.asarray(host)
                staged.append((t, arr.astype(t.dtype, copy=False)))
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"error loading state_dict for {type(self).__name__}, nothing was loaded: "
                                   f"cannot convert the value for a tensor of shape {t.shape} and dtype "
                                   f"{t.dtype}: {e}") from e
        with no_grad():
            for t, arr in staged:
                if arr is not t.array:
                    t.array[...] = arr
                t._version[0] += 1
        return IncompatibleKeys(missing, unexpected)

    # -- devices and dtypes ---------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move and/or cast parameters and buffers **in place**; returns ``self``.

        The Parameter objects stay the same (their storage is replaced), so references
        held elsewhere see the move; gradients move along. Build optimizers *after*
        moving: one built earlier notices the new storage and re-flattens (with a
        warning). ``dtype`` casts floating tensors only (integer buffers keep theirs).
        ``to("float64")`` or ``to(np.float64)`` is read as a dtype, as in PyTorch.
        """
        if dtype is None and device is not None and looks_like_dtype(device):
            device, dtype = None, device
        dst = get_backend(device) if device is not None else None
        dtype = np.dtype(dtype) if dtype is not None else None
        if dtype is not None and not is_floating(dtype):
            raise TypeError(f"Module.to: dtype must be a floating-point type, got {dtype}")
        with no_grad():
            for t in self._state_tensors().values():
                cast = dtype if dtype is not None and is_floating(t.dtype) else None
                moved = t.to(device=dst, dtype=cast)
                if moved is not t:
                    t.array, t.backend = moved.array, moved.backend
                    t._version[0] += 1
                    if t.grad is not None:
                        t.grad = t.grad.to(device=dst, dtype=cast)
        return self

    def cpu(self):
        """``self.to("cpu")``."""
        return self.to("cpu")

    def cuda(self, index: int = 0):
        """``self.to(f"cuda:{index}")``."""
        return self.to(f"cuda:{index}")

    def double(self):
        """Floating parameters and buffers to float64."""
        return self.to(dtype=np.float64)

    def float(self):
        """Floating parameters and buffers to float32."""
        return self.to(dtype=np.float32)

    def half(self):
        """Floating parameters and buffers to float16 (optimizers keep float32 master weights for them)."""
        return self.to(dtype=np.float16)

    def bfloat16(self):
        """Floating parameters and buffers to bfloat16 (``ml_dtypes``; float32 master weights in optimizers)."""
        from ..array import dtypes

        if dtypes.bfloat16 is None:
            raise TypeError("Module.bfloat16 needs the ml_dtypes package (pip install ml_dtypes)")
        return self.to(dtype=dtypes.bfloat16)

    def __deepcopy__(self, memo):
        # Backends are per-device singletons: pre-seed the memo so copied tensors keep theirs.
        for t in list(self._state_tensors().values()):
            memo.setdefault(id(t.backend), t.backend)
            if t.grad is not None:
                memo.setdefault(id(t.grad.backend), t.grad.backend)
        new = object.__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    # -- printing --------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's ``repr`` (its settings); subclasses define it."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for k, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({k}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class Sequential(Module):
    """Modules applied in order; ``Sequential(OrderedDict(name=module, ...))`` names them.

    Where a module has a fused op for itself and the modules after it
    (:meth:`Module.fused_with`: a Linear or a BatchNorm layer followed by a ReLU; a Linear, a ReLU
    and a Dropout), they run as that one op, with the same values, gradients and dropout masks.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            modules = list(modules[0].items())
        else:
            modules = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at {name!r}")
            setattr(self, name, m)

    def forward(self, x):
        """Run the modules in order, each on the previous one's output (fused runs of them as one op:
        see the class docstring)."""
        mods = [m for m in self._modules.values() if m is not None]
        i, n = 0, len(mods)
        while i < n:
            fn, j = mods[i], i + 1
            if not fn._hooked():  # a hooked module is called on its own: a fused op would skip its hooks
                while j < n and not mods[j]._hooked():
                    ask = getattr(fn, "fused_with", None)
                    fused = ask(mods[j]) if ask is not None else None
                    if fused is None:
                        break
                    fn, j = fused, j + 1
            x = fn(x)
            i = j
        return x

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            keys = list(self._modules)[i]
            return Sequential(OrderedDict((k, self._modules[k]) for k in keys))
        return mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, m):
        """Add module ``m`` at the end; returns ``self``."""
        if not isinstance(m, Module):
            raise TypeError(f"Sequential.append takes a Module, got {type(m).__name__}")
        setattr(self, str(len(self)), m)
        return self


class ModuleList(Module):
    """A list of modules, registered so their parameters are found (it has no ``forward``)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, m):
        """Add module ``m`` at the end; returns ``self``."""
        if not isinstance(m, Module):
            raise TypeError(f"ModuleList takes Modules, got {type(m).__name__}")
        setattr(self, str(len(self._modules)), m)
        return self

    def extend(self, modules):
        """Add each of ``modules`` at the end; returns ``self``."""
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return ModuleList(mods[i]) if isinstance(i, slice) else mods[i]

    def __setitem__(self, i, m):
        if not isinstance(m, Module):
            raise TypeError(f"ModuleList takes Modules, got {type(m).__name__}")
        key = list(self._modules)[i]
        setattr(self, key, m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """Modules by name, registered in insertion order, as ``torch.nn.ModuleDict``.

    Indexing, ``in``, ``len``, iteration (over the keys), ``keys``/``values``/``items``,
    ``update``, ``pop`` and ``clear`` behave as on a dict; every value must be a Module."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    @staticmethod
    def _check(key, module):
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict keys must be strings, got {type(key).__name__} {key!r}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict takes Modules, got {type(module).__name__} for key {key!r}")

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self._check(key, module)
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]
        object.__delattr__(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        """The names, in order."""
        return self._modules.keys()

    def values(self):
        """The modules, in order."""
        return self._modules.values()

    def items(self):
        """``(name, module)`` pairs, in order."""
        return self._modules.items()

    def clear(self) -> None:
        """Remove every module."""
        for k in list(self._modules):
            del self[k]

    def pop(self, key: str) -> Module:
        """Remove ``key`` and return its module."""
        m = self[key]
        del self[key]
        return m

    def update(self, modules) -> None:
        """Add the modules of a mapping or of an iterable of ``(name, module)`` pairs (all checked first)."""
        if hasattr(modules, "keys") and hasattr(modules, "__getitem__"):
            pairs = [(k, modules[k]) for k in modules.keys()]
        else:
            pairs = []
            for i, kv in enumerate(modules):
                if not isinstance(kv, (tuple, list)) or len(kv) != 2:
                    raise TypeError(f"ModuleDict.update: element #{i} should be a (name, module) pair, "
                                    f"got {type(kv).__name__}")
                pairs.append(tuple(kv))
        for k, m in pairs:
            self._check(k, m)
        for k, m in pairs:
            self.add_module(k, m)
