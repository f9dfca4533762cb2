"""ParameterList and ParameterDict, as ``torch.nn.ParameterList`` and ``torch.nn.ParameterDict``.

Each entry is registered on the container under its index (``"0"``, ``"1"``, ...) or its key, so
``parameters()``, ``state_dict()`` and optimizers see them in order, with torch's key names. A
plain Tensor stored in one becomes a :class:`~backprop_gpu.nn.Parameter` sharing its storage, as
torch; any other value is kept as it is (a Module is registered as a submodule).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from ..tape.tensor import Tensor
from .module import Module, Parameter


def _as_parameter(value):
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


def _describe(value):
    if isinstance(value, Tensor):
        kind = "Parameter containing" if isinstance(value, Parameter) else "Tensor"
        size = "x".join(str(s) for s in value.shape)
        return f"{kind}: [{value.dtype} of size {size}]"
    return type(value).__name__


class ParameterList(Module):
    """A list of parameters registered as ``"0"``, ``"1"``, ... (it has no ``forward``).

    Indexing (negative indices and slices too), assignment, ``len``, iteration, ``append``,
    ``extend`` and ``+=`` behave as on a list."""

    def __init__(self, values=None):
        super().__init__()
        self._size = 0
        if values is not None:
            self += values

    def _index(self, idx):
        i = int(idx)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {idx} is out of range for a ParameterList of length {len(self)}")
        return str(i % len(self))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)([self[i] for i in range(*idx.indices(len(self)))])
        return getattr(self, self._index(idx))

    def __setitem__(self, idx, value):
        setattr(self, self._index(idx), _as_parameter(value))

    def __len__(self):
        return self._size

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value):
        """Add ``value`` at the end (a Tensor becomes a Parameter); returns self."""
        i = self._size
        self._size += 1
        try:
            self[i] = value
        except Exception:
            self._size -= 1
            raise
        return self

    def extend(self, values):
        """Append every element of the iterable ``values``; returns self."""
        if isinstance(values, Tensor) or not hasattr(values, "__iter__"):
            raise TypeError(f"ParameterList.extend should be called with an iterable, but got "
                            f"{type(values).__name__}")
        for v in values:
            self.append(v)
        return self

    def __call__(self, *args, **kwargs):
        raise RuntimeError("ParameterList should not be called.")

    def extra_repr(self):
        return "\n".join(f"  ({i}): {_describe(v)}" for i, v in enumerate(self))

    def __repr__(self):
        body = self.extra_repr()
        return f"{type(self).__name__}(\n{body}\n)" if body else f"{type(self).__name__}()"


#: the instance attributes a key must not replace
_RESERVED = ("_keys", "_parameters", "_buffers", "_modules", "training")


class ParameterDict(Module):
    """Parameters by string key, registered in insertion order (it has no ``forward``).

    Indexing, ``in``, ``len``, iteration (over the keys), ``keys``/``values``/``items``, ``get``,
    ``setdefault``, ``pop``, ``popitem``, ``clear``, ``copy`` and ``update`` behave as on a dict.
    As torch's, ``update`` with a plain (unordered) mapping adds its entries in sorted key order,
    and in the given order from an OrderedDict, a ParameterDict or an iterable of pairs."""

    def __init__(self, parameters=None):
        super().__init__()
        self._keys = OrderedDict()
        if parameters is not None:
            self.update(parameters)

    @staticmethod
    def _check_key(key):
        if not isinstance(key, str):
            raise TypeError(f"Index given to ParameterDict cannot be used as a key as it is not a string "
                            f"(type is '{type(key).__name__}')")
        if not key or "." in key:
            raise KeyError(f"ParameterDict key {key!r} must be non-empty and contain no '.'")
        if key in _RESERVED or hasattr(ParameterDict, key):
            raise KeyError(f"ParameterDict key {key!r} would shadow the container's own attribute of that name")

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        self._check_key(key)
        setattr(self, key, _as_parameter(value))
        self._keys[key] = None

    def __delitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        del self._keys[key]
        delattr(self, key)

    def __len__(self):
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def __reversed__(self):
        return reversed(list(self._keys))

    def __contains__(self, key):
        return key in self._keys

    def keys(self):
        """The keys, in order."""
        return self._keys.keys()

    def values(self):
        """The parameters, in order."""
        return (self[k] for k in self._keys)

    def items(self):
        """``(key, parameter)`` pairs, in order."""
        return ((k, self[k]) for k in self._keys)

    def get(self, key, default=None):
        """``self[key]`` if present, else ``default``."""
        return self[key] if key in self else default

    def setdefault(self, key, default=None):
        """``self[key]``, first setting it to ``default`` if absent."""
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key):
        """Remove ``key`` and return its parameter."""
        v = self[key]
        del self[key]
        return v

    def popitem(self):
        """Remove and return the last ``(key, parameter)`` pair."""
        if not self._keys:
            raise KeyError("popitem(): ParameterDict is empty")
        k = next(reversed(self._keys))
        return k, self.pop(k)

    def clear(self):
        """Remove every entry."""
        for k in list(self._keys):
            del self[k]

    def copy(self):
        """A new ParameterDict holding the same parameters (not copies of them)."""
        return ParameterDict(OrderedDict(self.items()))

    def update(self, parameters):
        """Add the entries of a mapping (a plain one in sorted key order, as torch) or of an
        iterable of ``(key, value)`` pairs; every pair is checked before anything is added."""
        if isinstance(parameters, (OrderedDict, ParameterDict)):
            pairs = list(parameters.items())
        elif isinstance(parameters, Mapping):
            pairs = sorted(parameters.items())
        else:
            if isinstance(parameters, Tensor) or not hasattr(parameters, "__iter__"):
                raise TypeError(f"ParametersDict.update should be called with an iterable of key/value pairs, "
                                f"but got {type(parameters).__name__}")
            pairs = []
            for j, kv in enumerate(parameters):
                if not hasattr(kv, "__iter__") or isinstance(kv, (str, Tensor)) or len(kv) != 2:
                    raise ValueError(f"ParameterDict update sequence element #{j} should be a (key, value) pair, "
                                     f"got {_describe(kv)}")
                pairs.append(tuple(kv))
        for k, _ in pairs:
            self._check_key(k)
        for k, v in pairs:
            self[k] = v

    def __call__(self, *args, **kwargs):
        raise RuntimeError("ParameterDict should not be called.")

    def extra_repr(self):
        return "\n".join(f"  ({k}): {_describe(v)}" for k, v in self.items())

    def __repr__(self):
        body = self.extra_repr()
        return f"{type(self).__name__}(\n{body}\n)" if body else f"{type(self).__name__}()"


__all__ = ["ParameterList", "ParameterDict"]
