"""Parameter, Module and the containers, with PyTorch's semantics."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import no_grad
from ..backends import get_backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as a learnable parameter (requires grad)."""

    __slots__ = ()

    def __new__(cls, data=None, requires_grad: bool = True):
        if data is None:
            data = Tensor(np.zeros(0, np.float32))
        if not isinstance(data, Tensor):
            data = Tensor(data)
        p = object.__new__(cls)
        p.array = data.array
        p.backend = data.backend
        p.grad = None
        p._node = None
        p._version = [0]
        p.requires_grad = False
        p.requires_grad_(requires_grad)
        return p

    def __init__(self, data=None, requires_grad: bool = True):
        pass  # everything happens in __new__, which shares data's storage

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    __hash__ = Tensor.__hash__


class Module:
    """Base class for layers and models: tracks parameters, buffers and submodules.

    Assigning a :class:`Parameter` or a Module to an attribute registers it, in
    order, as in PyTorch.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """A non-learnable tensor saved in ``state_dict`` (e.g. BatchNorm's running stats)."""
        object.__setattr__(self, name, tensor)
        self._buffers[name] = tensor

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            object.__setattr__(self, name, None)
            self._parameters.pop(name, None)
        else:
            setattr(self, name, param)

    # -- traversal ------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module and every descendant, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            stack[0:0] = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = ""):
        """(dotted name, parameter) pairs, each parameter once even if shared."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for k, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{k}" if mname else k), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        for mname, m in self.named_modules():
            for k, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{k}" if mname else k), b

    def num_parameters(self) -> int:
        """Total number of learnable scalars."""
        return sum(p.size for p in self.parameters())

    # -- modes ------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout on, batch statistics) for this module and its children."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.array.fill(0)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    # -- calling ------------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, Tensor]":
        """Parameters and buffers by dotted name, as detached tensors sharing storage."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.detach()
        for name, b in self.named_buffers():
            out[name] = b.detach()
        return out

    def check_state_dict(self, state_dict, strict: bool = True):
        """``(missing, unexpected)`` keys of ``state_dict``; raises RuntimeError listing every
        problem (missing, unexpected and mis-shaped entries) without loading anything."""
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        bad = []
        for k, t in own.items():
            if k in state_dict:
                v = state_dict[k]
                shape = v.shape if isinstance(v, Tensor) else tuple(np.shape(v))
                if tuple(shape) != t.shape:
                    bad.append(f"{k}: checkpoint {tuple(shape)} vs model {t.shape}")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if bad:
            problems.append("shape mismatches: " + "; ".join(bad))
        if problems:
            raise RuntimeError(f"error(s) loading state_dict for {type(self).__name__}: " + " | ".join(problems))
        return missing, unexpected

    def _state_tensors(self):
        own = dict(self.named_parameters())
        own.update(dict(self.named_buffers()))
        return own

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values in place from ``state_dict`` (tensors or arrays).

        Every problem — missing, unexpected or mis-shaped entries — is found
        before anything is copied, and reported together; nothing is loaded
        then. With ``strict=False`` missing and unexpected keys are allowed
        (and returned) but shapes must still match. Copying in place keeps
        parameters that an optimizer holds as views of its flat buffer.
        """
        missing, unexpected = self.check_state_dict(state_dict, strict)
        with no_grad():
            for k, t in self._state_tensors().items():
                if k in state_dict:
                    v = state_dict[k]
                    host = v.numpy() if isinstance(v, Tensor) and v.device != t.device else (
                        v.array if isinstance(v, Tensor) else np.asarray(v))
                    t.array[...] = t.backend.asarray(host) if not isinstance(host, type(t.array)) else host
                    t._version[0] += 1
        return missing, unexpected

    def to(self, device=None, dtype=None):
        """Move (and/or cast) parameters and buffers in place; Parameter objects stay the same,
        so references held elsewhere see the move. An optimizer built earlier notices and
        re-flattens (with a warning); build optimizers after moving to avoid that."""
        dst = get_backend(device) if device is not None else None
        with no_grad():
            self._move(dst, dtype)
        return self

    def _move(self, dst, dtype):
        for t in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            moved = t.to(device=dst, dtype=dtype if t.dtype.kind == "f" else None) if (dst or dtype) else t
            if moved is not t:
                t.array, t.backend = moved.array, moved.backend
                t._version[0] += 1
                if t.grad is not None:
                    t.grad = t.grad.to(device=dst, dtype=dtype if dtype else None)

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for k, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({k}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class Sequential(Module):
    """Modules applied in order."""

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
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return Sequential(*mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, m):
        setattr(self, str(len(self)), m)
        return self


class ModuleList(Module):
    """A list of modules, registered so their parameters are found."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m):
        setattr(self, str(len(self._modules)), m)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
