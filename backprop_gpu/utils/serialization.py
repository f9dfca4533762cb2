"""``bg.save`` / ``bg.load``: ``torch.save``/``torch.load`` for state dicts and tensors, without pickle.

A file is a safetensors file: every tensor and NumPy array is one entry (``"0"``, ``"1"``,
...), and the structure around them (dicts, lists, tuples, numbers, strings, None) is JSON
in the safetensors metadata under ``"backprop_gpu.save"``. That covers what training scripts
save: a Module's, Optimizer's or scheduler's ``state_dict``, dicts of them with epoch
numbers and losses, and plain tensors. Anything else (an arbitrary object, a function)
raises TypeError: the design never unpickles code from a file.

Saving to a path is atomic (a temp file in the same directory, fsync, ``os.replace``), so
a crash mid-save leaves the previous file intact and no temp file behind.

Each JSON node is a plain JSON value (str, bool, int, finite float, None) or a one-key
object naming its kind: ``{"dict": [[key, value], ...]}`` (keys of any kind and their
order kept, so an optimizer's integer state keys come back as ints), ``{"odict": ...}``,
``{"list": [...]}``, ``{"tuple": [...]}``, ``{"float": "nan"|"inf"|"-inf"}``,
``{"tensor": name, "device": "cuda:0", "backend": "cupy:0", "requires_grad": bool}``,
``{"ndarray": name}`` and ``{"npscalar": name}``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..array import Backend, get_backend
from ..array.devices import BackendUnavailableError, Device
from ..tape.tensor import Tensor

_KEY = "backprop_gpu.save"
FORMAT = "backprop_gpu.save.v1"


class _Encoder:
    def __init__(self):
        self.arrays = {}
        self._count = 0

    def _name(self, path) -> str:
        """The entry's name: the dotted path of string keys that leads to it (``model.fc.weight``), so
        ``safetensors.torch.load_file`` reads a saved state_dict by its keys; else the next free number."""
        if path:
            name = ".".join(path)
            if name not in self.arrays and name != "__metadata__":
                return name
        while str(self._count) in self.arrays:
            self._count += 1
        return str(self._count)

    def _array(self, arr, path=None) -> str:
        name = self._name(path)
        arr = np.asarray(arr)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"bg.save: cannot store an array of dtype {arr.dtype} (numeric and bool only)")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
        self.arrays[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
        return name

    def encode(self, obj, where="obj", path=()):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"float": repr(obj)}
        if isinstance(obj, Tensor):
            b = obj.backend
            index = b.device.index
            return {"tensor": self._array(b.to_host(obj.array), path), "device": str(obj.device),
                    "backend": b.name if index is None else f"{b.name}:{index}",
                    "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, np.ndarray):
            return {"ndarray": self._array(obj, path)}
        if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
            return {"npscalar": self._array(np.asarray(obj))}
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str, tuple))):
                    raise TypeError(f"bg.save: dict key {k!r} at {where} is a {type(k).__name__}; keys must be "
                                    "str, int, float, bool, None or tuples of them (pickle is not used)")
                sub = path + (k,) if path is not None and isinstance(k, str) else None
                items.append([self.encode(k, where), self.encode(v, f"{where}[{k!r}]", sub)])
            return {"odict" if isinstance(obj, OrderedDict) else "dict": items}
        if isinstance(obj, (list, tuple)):
            if isinstance(obj, tuple) and hasattr(obj, "_fields"):
                raise TypeError(f"bg.save: cannot store the namedtuple {type(obj).__name__} at {where} "
                                "(pickle is not used); convert it to a tuple or dict")
            return {"tuple" if isinstance(obj, tuple) else "list":
                    [self.encode(v, f"{where}[{i}]", None) for i, v in enumerate(obj)]}
        raise TypeError(f"bg.save: cannot store an object of type {type(obj).__module__}.{type(obj).__qualname__} "
                        f"at {where}: pickle is not used, so only tensors, NumPy arrays, numbers, strings, "
                        "None and dicts/lists/tuples of them can be saved (e.g. a state_dict())")


def _serialize(obj) -> bytes:
    from safetensors.numpy import save as st_save

    enc = _Encoder()
    tree = enc.encode(obj)
    return st_save(enc.arrays, metadata={_KEY: json.dumps({"format": FORMAT, "obj": tree})})


def write_atomic(path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically: a temp file beside it (``.<name>.*.tmp``), fsync, rename,
    fsync of the directory. The file gets the mode the umask allows, as ``open`` would give it; a
    failed write leaves no temp file and the previous file untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes it 0600; give it what open() would
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save(obj, f) -> None:
    """Save ``obj`` to ``f`` (a path, or a binary file-like object such as ``io.BytesIO``), as ``torch.save``.

    ``obj`` may be a tensor, a NumPy array, a number, a string, None, or dicts, lists and tuples
    of these: a ``state_dict()`` of a Module, Optimizer or scheduler, or a checkpoint dict of
    them. Anything else raises TypeError naming its type (pickle is never used), before
    anything is written. Writes to a path are atomic.
    """
    blob = _serialize(obj)
    if hasattr(f, "write"):
        f.write(blob)
        return
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"bg.save: f must be a path or a writable binary file object, got {type(f).__name__}")
    write_atomic(f, blob)


def _target(map_location, saved_device: str, saved_backend: str):
    """The device spec a tensor saved on ``saved_device`` goes to."""
    if map_location is None:
        return saved_backend
    if isinstance(map_location, dict):
        return map_location.get(saved_device, saved_backend)
    return map_location


class _Decoder:
    def __init__(self, arrays, map_location):
        self.arrays, self.map_location = arrays, map_location

    def _get(self, name):
        if not isinstance(name, str) or name not in self.arrays:
            raise ValueError(f"bg.load: the file's structure names tensor entry {name!r}, which it does not hold")
        return self.arrays[name]

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, dict) and len(node) >= 1:
            kind = next(iter(node))
            v = node[kind]
            if kind in ("dict", "odict"):
                out = OrderedDict() if kind == "odict" else {}
                for k, val in v:
                    k = self.decode(k)
                    out[tuple(k) if isinstance(k, list) else k] = self.decode(val)
                return out
            if kind == "list":
                return [self.decode(x) for x in v]
            if kind == "tuple":
                return tuple(self.decode(x) for x in v)
            if kind == "float":
                return float(v)
            if kind == "ndarray":
                return self._get(v)
            if kind == "npscalar":
                return self._get(v)[()]
            if kind == "tensor":
                spec = _target(self.map_location, node["device"], node["backend"])
                try:
                    backend = get_backend(spec)
                except BackendUnavailableError as e:
                    raise BackendUnavailableError(
                        f"bg.load: a tensor was saved on {node['device']} ({node['backend']}), which cannot be "
                        f"used here ({e}); pass map_location='cpu' to load it on the CPU") from None
                t = Tensor._make(backend.asarray(self._get(v)), backend)
                return t.requires_grad_(True) if node.get("requires_grad") else t
        raise ValueError(f"bg.load: unrecognised structure node {node!r}")


def load(f, map_location=None, weights_only: bool = True, **kwargs):
    """Load what :func:`save` wrote, from a path or a binary file-like object, as ``torch.load``.

    ``map_location`` puts every tensor on one device (a device string such as ``'cpu'`` or
    ``'cuda:0'``, or a :class:`~backprop_gpu.Device`), or maps saved devices to others with a
    dict (``{'cuda:0': 'cpu'}``); by default tensors return to the backend they were saved
    from. ``weights_only`` is accepted for torch's signature: files never hold code, so
    loading is always weights-only. A plain safetensors file (``safetensors.torch.save_file(
    model.state_dict(), f)``, say) loads as an ordered dict of its tensors by name, ready for
    ``load_state_dict``; and :func:`save` names each tensor entry by its dotted path of string keys,
    so ``safetensors.torch.load_file`` reads a saved ``state_dict`` back by its keys. A corrupt or
    truncated file raises ValueError.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    if kwargs:
        raise TypeError(f"bg.load got unsupported arguments {sorted(kwargs)} (no pickle module is used)")
    if isinstance(map_location, Backend):
        map_location = map_location.name if map_location.device.type == "cpu" else \
            f"{map_location.name}:{map_location.device.index or 0}"
    if map_location is not None and not isinstance(map_location, (str, Device, dict)):
        raise TypeError(f"bg.load: map_location must be a device string, a Device or a dict of device strings, "
                        f"got {type(map_location).__name__}")
    if isinstance(map_location, Device):
        map_location = str(map_location)
    if isinstance(map_location, str):
        get_backend(map_location)  # an unknown or unusable device fails here, before reading
    if hasattr(f, "read"):
        data, name = f.read(), "the file object"
    elif isinstance(f, (str, os.PathLike)):
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"bg.load: {path} does not exist")
        data, name = path.read_bytes(), str(path)
    else:
        raise TypeError(f"bg.load: f must be a path or a readable binary file object, got {type(f).__name__}")
    try:
        arrays = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        if _KEY not in (header.get("__metadata__") or {}):
            # a plain safetensors file (safetensors.torch.save_file of a state_dict, say): its tensors by name
            return _plain_state_dict(header, arrays, map_location)
        meta = json.loads(header["__metadata__"][_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"bg.load: {name} is not a file written by bg.save, or it is corrupt or truncated "
                         f"({len(data)} bytes): {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"bg.load: {name} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    return _Decoder(arrays, map_location).decode(meta["obj"])


def _plain_state_dict(header: dict, arrays: dict, map_location) -> OrderedDict:
    """The tensors of a safetensors file that ``bg.save`` did not write, in the file's order, on
    ``map_location``'s device (the default device if none; a dict maps only ``'cpu'``)."""
    spec = _target(map_location, "cpu", None) if map_location is not None else None
    backend = get_backend(spec)
    return OrderedDict((k, Tensor._make(backend.asarray(arrays[k]), backend)) for k in header if k != "__metadata__")


__all__ = ["save", "load"]
