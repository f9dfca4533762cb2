"""A recording stand-in for CuPy, with NumPy underneath, for proving the GPU rules on the CPU.

:func:`make_modules` builds fake ``cupy``, ``cupy.cuda``, ``cupyx``, ``cupyx.scipy.special`` ...
modules whose :class:`ndarray` wraps (does not subclass) a NumPy array, so device arrays stay
distinguishable from host ones exactly as with CuPy: ``isinstance(a, np.ndarray)`` is False, and
``np.asarray(a)`` is an implicit device-to-host conversion, which CuPy refuses with a TypeError
(so does this stand-in when ``strict``; otherwise it counts a sync).

Every event is counted against its *call site*: the first frame inside ``backprop_gpu`` (file:line
and function), else the first frame outside this module; syncs and copies add up to three of
its callers inside the package. The rules:

* **launch**: each ufunc, reduction, matmul, copy, fill, scatter, gather (advanced index),
  ``__setitem__`` or other computing function on device arrays; each ``RawKernel`` call. Views
  (reshape, transpose, basic indexing, ``as_strided``, ``astype`` to the same dtype, ...) and
  ``empty`` launch nothing, unless NumPy had to copy.
* **sync** (device to host): ``asnumpy``, ``.get()``, ``__array__``, ``__bool__``, ``__float__``,
  ``__int__``, ``__index__``, ``.item()``, ``.tolist()``, ``repr``, ``Device.synchronize()``.
* **h2d** (host to device, bytes noted): ``asarray``/``array`` of host data (NumPy arrays, lists,
  Python scalars: CuPy allocates and copies a 0-d array for those too), host index arrays and
  host values written by ``__setitem__``.
* **alloc**: each new device array that owns its memory (results, ``empty``/``zeros``/..., copies
  from the host); views allocate nothing.
* **stream**: ``Stream.record()`` and ``Stream.wait_event()`` (which stream waits for which);
  **wait**: ``Event.synchronize()``, a host wait for one stream's work (a copy), not a device read.
  ``.set()`` copies say whether their source is pinned (``cupyx.empty_pinned``) and on which stream.

Like CuPy, integer index arrays wrap around where they are out of bounds, and nothing sets
floating-point warnings.

``RawKernel``/``RawModule`` run the CUDA C through a host build (:func:`host_c`): the optimizer
kernels of ``backprop_gpu.array.optim.cuda_source`` with their grid-stride loop made a plain loop,
the Philox kernels of ``backprop_gpu.array.rng.cuda_source`` with their host prelude, each built
with the system C compiler (``tests/helpers.compile_host_c``; :func:`install` skips without one).
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import numbers
import operator
import os
import sys
import types

import numpy as np

import backprop_gpu

_PKG = os.path.dirname(os.path.abspath(backprop_gpu.__file__)) + os.sep
_ROOT = os.path.dirname(_PKG.rstrip(os.sep)) + os.sep
_HERE = os.path.abspath(__file__)

# functions whose result may be a view: a launch only when NumPy had to copy
_MAYBE_VIEW = {"reshape", "view", "transpose", "swapaxes", "squeeze", "expand_dims", "broadcast_to", "ravel",
               "moveaxis", "atleast_1d", "atleast_2d", "atleast_3d", "diagonal", "real", "imag", "astype",
               "ascontiguousarray", "asarray", "split", "array_split", "broadcast_arrays", "rollaxis",
               "flip", "fliplr", "flipud", "__getitem__", "as_strided_view"}
# allocation without a kernel
_NO_KERNEL = {"empty", "empty_like"}
# metadata: never a device value
_METADATA = {"shape", "ndim", "size", "result_type", "can_cast", "broadcast_shapes", "iinfo", "finfo", "dtype",
             "promote_types", "isscalar", "min_scalar_type", "issubdtype", "get_array_module", "obj2sctype",
             "common_type"}


# --- the recorder --------------------------------------------------------------------------

class Counts:
    """What happened inside one ``Recorder.count()`` block: totals and per-site events."""

    def __init__(self):
        self.events = collections.Counter()  # (kind, site, what) -> n
        self.h2d_bytes = 0

    def _total(self, kind):
        return sum(n for (k, _, _), n in self.events.items() if k == kind)

    @property
    def launches(self) -> int:
        return self._total("launch")

    @property
    def syncs(self) -> int:
        return self._total("sync")

    @property
    def h2d(self) -> int:
        return self._total("h2d")

    @property
    def allocs(self) -> int:
        return self._total("alloc")

    def sites(self, kind) -> collections.Counter:
        """``{site: count}`` for one kind ("launch", "sync", "h2d", "alloc")."""
        out = collections.Counter()
        for (k, site, _), n in self.events.items():
            if k == kind:
                out[site] += n
        return out

    def table(self, kinds=("sync", "h2d", "launch"), top=None) -> str:
        """A readable per-site table, most frequent first (for failure messages and reports)."""
        lines = [f"launches {self.launches}, D2H syncs {self.syncs}, H2D copies {self.h2d} "
                 f"({self.h2d_bytes} bytes)"]
        for kind in kinds:
            rows = sorted(((n, site, what) for (k, site, what), n in self.events.items() if k == kind),
                          key=lambda r: (-r[0], r[1]))
            if not rows:
                continue
            lines.append(f"  {kind}:")
            for n, site, what in rows[:top]:
                lines.append(f"    {n:4d}  {site}  [{what}]")
            if top is not None and len(rows) > top:
                lines.append(f"    ... {len(rows) - top} more sites")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Counts launches={self.launches} syncs={self.syncs} h2d={self.h2d}>"


class Recorder:
    """Counts events of the stand-in; ``strict`` makes implicit device-to-host conversion and host
    arrays in device operations a TypeError, as with CuPy."""

    def __init__(self, strict: bool = True, n_devices: int = 1):
        self.strict = strict
        self.n_devices = n_devices
        self.total = Counts()
        self._open: list[Counts] = []
        self.current_device = 0

    @contextlib.contextmanager
    def count(self):
        """``with rec.count() as c:`` counts the events inside the block into ``c``."""
        c = Counts()
        self._open.append(c)
        try:
            yield c
        finally:
            self._open.remove(c)

    @staticmethod
    def site(depth: int = 1) -> str:
        """The first frame inside ``backprop_gpu`` ("path:line (function)"), followed by up to
        ``depth - 1`` of its callers there ("< ..."); else the first frame outside this module."""
        f = sys._getframe(1)
        outside, chain = None, []
        while f is not None and len(chain) < depth:
            fn = os.path.abspath(f.f_code.co_filename)
            if fn != _HERE:
                if fn.startswith(_PKG):
                    chain.append(f"{fn[len(_ROOT):] if not chain else os.path.basename(fn)}:{f.f_lineno} "
                                 f"({f.f_code.co_name})")
                elif outside is None and not chain:
                    outside = f"{os.path.basename(fn)}:{f.f_lineno} ({f.f_code.co_name})"
            f = f.f_back
        return " < ".join(chain) if chain else (outside or "?")

    def record(self, kind: str, what: str, nbytes: int = 0) -> None:
        # syncs and copies name the callers too: the first frame is often a helper like to_host
        key = (kind, self.site(1 if kind == "launch" else 4), what)
        for c in (self.total, *self._open):
            c.events[key] += 1
            if kind == "h2d":
                c.h2d_bytes += nbytes

    def refuse(self, message: str) -> None:
        """In strict mode, what CuPy would raise; otherwise nothing (the caller counts)."""
        if self.strict:
            raise TypeError(f"{message} (at {self.site()}; CuPy raises here)")


# --- arrays --------------------------------------------------------------------------------

def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _Ptr:
    def __init__(self, a):
        self.ptr = a.ctypes.data


class ndarray:
    """A device array: a NumPy array that only this module's functions may touch."""

    __slots__ = ("_a", "_base", "_rec", "_dev", "__weakref__")
    __array_priority__ = 100

    def __init__(self, *a, **k):
        raise TypeError("make device arrays with the stand-in cupy's functions")

    # -- metadata (free) --------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: self._base)
    data = property(lambda self: _Ptr(self._a))
    device = property(lambda self: self._rec.module.cuda.Device(self._dev))

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False), "version": 3,
                "strides": None if a.flags.c_contiguous else a.strides}

    def __len__(self):
        if not self._a.ndim:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    __hash__ = None

    @property
    def T(self):
        return _call(self._rec, np.transpose, (self,), {}, "transpose")

    # -- device to host -----------------------------------------------------------
    def _to_host(self, what):
        self._rec.record("sync", what)
        return self._a.copy()

    def get(self, stream=None, order="C", out=None, blocking=True):
        h = self._to_host(".get()")
        if out is not None:
            out[...] = h
            return out
        return h

    def __array__(self, dtype=None, copy=None):
        self._rec.refuse(f"implicit conversion of a device array {self.shape} {self.dtype} to a NumPy array")
        h = self._to_host("implicit __array__")
        return h if dtype is None else h.astype(dtype)

    def item(self, *args):
        return self._to_host(".item()").item(*args)

    def tolist(self):
        return self._to_host(".tolist()").tolist()

    def __bool__(self):
        return bool(self._to_host("__bool__"))

    def __float__(self):
        return float(self._to_host("__float__"))

    def __int__(self):
        return int(self._to_host("__int__"))

    def __index__(self):
        if self._a.dtype.kind not in "iub" or self._a.ndim:
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return operator.index(self._to_host("__index__")[()])

    def __complex__(self):
        return complex(self._to_host("__complex__"))

    def __repr__(self):
        return "stand-in cupy " + repr(self._to_host("repr"))

    __str__ = __repr__

    def __format__(self, spec):
        return format(self._to_host("format")[()] if not self._a.ndim else self._to_host("format"), spec)

    # -- NumPy protocols: dispatch back to the stand-in --------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        return _ufunc_call(self._rec, ufunc, method, inputs, kw)

    def __array_function__(self, func, types_, args, kwargs):
        return _call(self._rec, func, args, kwargs, func.__name__)

    # -- indexing -------------------------------------------------------------------
    def __getitem__(self, key):
        basic = _basic(key)
        parts = key if isinstance(key, tuple) else (key,)
        if basic and not any(k is Ellipsis for k in parts):
            key = parts + (Ellipsis,)  # CuPy gives a 0-d view, never a NumPy scalar
        return _call(self._rec, operator.getitem, (self, key), {}, "__getitem__", advanced=not basic)

    def __setitem__(self, key, value):
        rec = self._rec
        key = _unwrap_index(rec, key)
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (np.ndarray, list, tuple)):
            v = np.asarray(value)
            rec.record("h2d", "host value in __setitem__", v.nbytes)
            value = v
        self._a[_wrap_indices(key, self._a.shape)] = value
        rec.record("launch", "__setitem__")

    # -- in-place helpers ----------------------------------------------------------------
    def fill(self, value):
        self._a.fill(value)
        self._rec.record("launch", "fill")

    def set(self, arr, stream=None):
        where = f"{'pinned' if isinstance(arr, _PinnedArray) else 'pageable'} memory on " + \
            ("the current stream" if stream is None else stream.name)
        arr = np.asarray(arr)
        self._rec.record("h2d", f".set() from {where}", arr.nbytes)
        self._a[...] = arr

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        raise TypeError("pickling a stand-in device array would hide a device-to-host copy")


def _method(name):
    fn = getattr(np.ndarray, name)

    def m(self, *args, **kw):
        return _call(self._rec, fn, (self,) + args, kw, name)
    m.__name__ = name
    return m


for _name in ("reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "flatten", "astype", "copy",
              "sum", "mean", "max", "min", "argmax", "argmin", "prod", "any", "all", "var", "std", "cumsum",
              "clip", "dot", "nonzero", "round", "conj", "take", "repeat", "sort", "argsort", "diagonal",
              "cumprod", "trace"):
    setattr(ndarray, _name, _method(_name))

_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
           "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "matmul": np.matmul,
           "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift,
           "rshift": np.right_shift}


def _binary(uf, reflected=False, inplace=False):
    if inplace:
        def f(self, other):
            _ufunc_call(self._rec, uf, "__call__", (self, other), {"out": (self,)})
            return self
    elif reflected:
        def f(self, other):
            return _ufunc_call(self._rec, uf, "__call__", (other, self), {})
    else:
        def f(self, other):
            return _ufunc_call(self._rec, uf, "__call__", (self, other), {})
    return f


for _name, _uf in _BINARY.items():
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_uf, inplace=True))
for _name, _uf in {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
                   "ge": np.greater_equal}.items():
    setattr(ndarray, f"__{_name}__", _binary(_uf))
for _name, _uf in {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}.items():
    setattr(ndarray, f"__{_name}__", (lambda uf: lambda self: _ufunc_call(self._rec, uf, "__call__", (self,), {}))(_uf))


def _basic(key) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (slice, numbers.Integral, type(None), type(Ellipsis))) and not isinstance(k, bool)
               for k in parts)


def _unwrap_index(rec, key):
    if isinstance(key, tuple):
        return tuple(_unwrap_index(rec, k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (np.ndarray, list)):
        k = np.asarray(key)
        rec.record("h2d", f"host index array {k.shape} {k.dtype}", k.nbytes)
        return k
    return key


def _wrap_indices(key, shape):
    """Integer index arrays taken modulo their axis' length: CuPy wraps out-of-bounds indices
    where NumPy raises (keys with None, Ellipsis or boolean arrays are left as they are)."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(k is None or k is Ellipsis or (isinstance(k, np.ndarray) and k.dtype == bool) for k in parts) \
            or len(parts) > len(shape):
        return key
    out = tuple(k % shape[i] if isinstance(k, np.ndarray) and k.dtype.kind in "iu" and shape[i] else k
                for i, k in enumerate(parts))
    return out if isinstance(key, tuple) else out[0]


def _wrap_new(rec, a, base=None, dev=None):
    if base is None:  # a device array of its own memory (a view has a base)
        rec.record("alloc", f"{a.shape} {a.dtype}")
    w = object.__new__(ndarray)
    w._a = a
    w._base = base
    w._rec = rec
    w._dev = rec.current_device if dev is None else dev
    return w


class _Unwrapper:
    """Device arrays to NumPy for one call, noting host arrays met on the way (a CuPy TypeError)."""

    def __init__(self, rec, what):
        self.rec, self.what, self.devs, self.host = rec, what, [], []

    def __call__(self, x):
        if isinstance(x, ndarray):
            self.devs.append(x)
            return x._a
        if isinstance(x, np.ndarray):
            self.host.append(x)
            return x
        if isinstance(x, (list, tuple)):
            return type(x)(self(v) for v in x)
        if isinstance(x, dict):
            return {k: self(v) for k, v in x.items()}
        return x

    def check_host(self):
        for h in self.host:
            self.rec.refuse(f"{self.what}: a host NumPy array {h.shape} {h.dtype} among device arrays")
            self.rec.record("h2d", f"host operand of {self.what}", h.nbytes)


def _wrap_result(rec, r, parents, name, compute):
    """Wrap NumPy results as device arrays; views keep their parent's base. Returns (wrapped, fresh)."""
    if isinstance(r, tuple):
        out = [_wrap_result(rec, x, parents, name, compute) for x in r]
        return type(r)(o for o, _ in out) if not hasattr(r, "_fields") else type(r)(*[o for o, _ in out]), \
            any(f for _, f in out)
    if isinstance(r, list):
        out = [_wrap_result(rec, x, parents, name, compute) for x in r]
        return [o for o, _ in out], any(f for _, f in out)
    if isinstance(r, np.ndarray):
        for p in parents:
            if r is p._a:
                return p, False
        root = _root(r)
        for p in parents:
            if root is _root(p._a):
                return _wrap_new(rec, r, p._base if p._base is not None else p, p._dev), False
        return _wrap_new(rec, r), True
    if isinstance(r, (np.generic, bool)) and compute:
        return _wrap_new(rec, np.asarray(r)), True
    return r, False


def _call(rec, fn, args, kwargs, name, advanced=False):
    """Run NumPy ``fn`` on the unwrapped arguments and count what CuPy would launch."""
    un = _Unwrapper(rec, name)
    a, k = un(tuple(args)), un(dict(kwargs))
    for d in un.devs:
        # a copy may read another device (CuPy copies peer to peer); anything else runs on the current one
        if d._dev != rec.current_device and name not in _METADATA and name not in ("copy", "array"):
            # CuPy would launch on the current device (and allocate the result there)
            rec.refuse(f"{name}: an array on device {d._dev} used while device {rec.current_device} is current")
    if name == "__getitem__":
        a = (a[0], _wrap_indices(_unwrap_index(rec, args[1]), a[0].shape))
    else:
        un.check_host()
    with np.errstate(all="ignore"):  # a GPU sets no floating-point flags
        r = fn(*a, **k)
    compute = bool(un.devs) and name not in _METADATA
    wrapped, fresh = _wrap_result(rec, r, un.devs, name, compute)
    if name in _NO_KERNEL or name in _METADATA:
        return wrapped
    if name == "__getitem__":
        if advanced or fresh:
            rec.record("launch", "gather (advanced index)" if advanced else "__getitem__ copy")
        return wrapped
    if name in _MAYBE_VIEW:
        if fresh:
            rec.record("launch", f"{name} (copy)")
        return wrapped
    if compute or fresh or "out" in kwargs:
        rec.record("launch", name)
    return wrapped


def _ufunc_call(rec, ufunc, method, inputs, kw):
    if "out" in kw and not isinstance(kw["out"], tuple):
        kw = dict(kw, out=(kw["out"],))
    fn = ufunc if method == "__call__" else getattr(ufunc, method)
    label = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
    if method == "at":
        un = _Unwrapper(rec, label)
        a = un(tuple(inputs))
        fn(*a, **kw)
        rec.record("launch", label)
        return None
    return _call(rec, fn, inputs, kw, label)


# --- the modules ---------------------------------------------------------------------------

class _Ufunc:
    """``cupy.<ufunc>``: counts one launch per call, reduce, accumulate, outer or at."""

    def __init__(self, rec, uf):
        self._rec, self._uf = rec, uf
        self.__name__ = uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __call__(self, *args, **kw):
        return _ufunc_call(self._rec, self._uf, "__call__", args, kw)

    def __getattr__(self, method):
        if method not in ("reduce", "accumulate", "outer", "at", "reduceat"):
            raise AttributeError(method)
        return lambda *args, **kw: _ufunc_call(self._rec, self._uf, method, args, kw)


def _asarray(rec, obj, dtype=None, order=None, *, blocking=False, copy=False):
    if isinstance(obj, ndarray):
        if copy:
            return _call(rec, np.array, (obj,), {"dtype": dtype, "copy": True}, "copy")
        return _call(rec, np.asarray, (obj,), {"dtype": dtype}, "asarray")
    if isinstance(obj, (list, tuple)) and any(isinstance(v, ndarray) for v in obj):
        return _call(rec, np.stack, (list(obj),), {}, "stack")
    host = np.array(obj, dtype=dtype, order=order or "K", copy=True)
    rec.record("h2d", f"asarray {host.shape} {host.dtype} from {type(obj).__name__}", host.nbytes)
    return _wrap_new(rec, host)


class _Device:
    """``cupy.cuda.Device``: a context manager setting the current device."""

    def __init__(self, rec, device=None):
        self._rec = rec
        self.id = rec.current_device if device is None else int(device)
        self._prev = []
        self.attributes = {"MultiProcessorCount": 132}
        self.compute_capability = "90"

    def __enter__(self):
        if not 0 <= self.id < self._rec.n_devices:
            raise RuntimeError(f"stand-in cupy: device {self.id} of {self._rec.n_devices}")
        self._prev.append(self._rec.current_device)
        self._rec.current_device = self.id
        return self

    def __exit__(self, *exc):
        self._rec.current_device = self._prev.pop()

    def use(self):
        self._rec.current_device = self.id

    def synchronize(self):
        self._rec.record("sync", "Device.synchronize()")

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Stream:
    """``cupy.cuda.Stream``: ``record`` and ``wait_event`` are counted as kind "stream" (what they
    order), ``synchronize`` as a sync."""

    def __init__(self, rec, null=True, non_blocking=False, ptds=False):
        self._rec = rec
        self.ptr = 0 if null else id(self)
        self.name = "the current stream" if null else "a side stream"

    def synchronize(self):
        self._rec.record("sync", "Stream.synchronize()")

    def record(self, event=None):
        self._rec.record("stream", f"record on {self.name}")
        return _Event(self._rec, self)

    def wait_event(self, event):
        self._rec.record("stream", f"{self.name} waits for an event on {event.stream.name}")


class _Event:
    """``cupy.cuda.Event`` recorded on ``stream``: a host wait for it is kind "wait" (a wait on that
    stream's work, not a read of device data)."""

    def __init__(self, rec, stream):
        self._rec, self.stream = rec, stream

    def synchronize(self):
        self._rec.record("wait", f"Event.synchronize() on {self.stream.name}")

    def query(self):
        return True


class _PinnedArray(np.ndarray):
    """A host array from ``cupyx.empty_pinned`` (its views stay pinned), so that ``.set()`` can say
    whether it copies from page-locked memory."""


# -- RawKernel through a host build -------------------------------------------------------------

def host_c(cuda_source: str) -> str:
    """The CUDA C of one of the project's kernel sources as C99 for the host: the optimizer kernels
    (``optim.cuda_source``: its grid-stride loop becomes a plain loop), the Philox kernels
    (``rng.cuda_source``: its CUDA prelude becomes its host prelude) and the hot ops' kernels
    (``kernels.cuda``: C99 as they stand)."""
    from backprop_gpu.array.kernels import cuda as kernels_c
    from backprop_gpu.array.optim import cuda_source as optim_c
    from backprop_gpu.array.rng import cuda_source as rng_c

    if cuda_source == kernels_c.SOURCE:  # the hot ops' kernels: written to be C99 as they are
        return cuda_source
    if rng_c.PRELUDE_CUDA in cuda_source:
        return cuda_source.replace(rng_c.PRELUDE_CUDA, rng_c.PRELUDE_HOST)
    if optim_c._DEVICE_LOOP in cuda_source:
        return "#include <math.h>\n" + cuda_source.replace('extern "C" __global__ ', "").replace(
            optim_c._DEVICE_LOOP, optim_c._HOST_LOOP)
    raise NotImplementedError("the stand-in RawKernel builds only the optimizer, Philox and hot-op kernel "
                              "sources for the host")


class _HostBuilds:
    """Host shared libraries built from kernel sources, one directory per source (cached)."""

    def __init__(self, directory):
        self.directory = directory
        self._libs = {}

    def lib(self, source: str):
        key = hashlib.sha1(source.encode()).hexdigest()[:16]
        lib = self._libs.get(key)
        if lib is None:
            from helpers import compile_host_c

            d = self.directory / key
            d.mkdir(parents=True, exist_ok=True)
            lib = self._libs[key] = compile_host_c(d, host_c(source))
        return lib


_CTYPE_OF = {np.dtype(np.int64): ctypes.c_longlong, np.dtype(np.int32): ctypes.c_int,
             np.dtype(np.uint64): ctypes.c_ulonglong, np.dtype(np.uint32): ctypes.c_uint,
             np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


class _RawKernel:
    """``cupy.RawKernel(code, name, options=...)``: one launch per call, run by a host build."""

    def __init__(self, rec, builds, code, name, options=(), backend="nvrtc", translate_cucomplex=False, **kw):
        self._rec, self._builds = rec, builds
        self.code, self.name, self.options = code, name, tuple(options)
        self._fn = None

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        if self._fn is None:
            self._fn = getattr(self._builds.lib(self.code), self.name)
            self._fn.restype = None
        cargs = []
        for a in args:
            if isinstance(a, ndarray):
                if not a._a.flags.c_contiguous:
                    raise ValueError(f"stand-in RawKernel {self.name}: a non-contiguous array argument")
                if a._dev != self._rec.current_device:
                    raise ValueError(f"stand-in RawKernel {self.name}: an array on device {a._dev} launched "
                                     f"on device {self._rec.current_device}")
                cargs.append(ctypes.c_void_p(a._a.ctypes.data))
            elif isinstance(a, np.ndarray):
                raise TypeError(f"RawKernel {self.name}: a host NumPy array argument {a.shape} {a.dtype}")
            elif isinstance(a, np.generic) and a.dtype in _CTYPE_OF:
                cargs.append(_CTYPE_OF[a.dtype](a.item()))
            else:
                # CuPy passes a Python int as a C int and a float as a double: the generated
                # kernels take exact widths, so the backend must pass NumPy scalars
                raise TypeError(f"RawKernel {self.name}: argument {a!r} of type {type(a).__name__}; pass a "
                                f"NumPy scalar of the kernel's parameter type")
        self._rec.record("launch", f"RawKernel {self.name}")
        self._fn(*cargs)


class _RawModule:
    def __init__(self, rec, builds, code=None, path=None, options=(), backend="nvrtc", name_expressions=None, **kw):
        if code is None:
            with open(path) as fh:
                code = fh.read()
        self._rec, self._builds, self.code, self.options = rec, builds, code, tuple(options)

    def get_function(self, name):
        return _RawKernel(self._rec, self._builds, self.code, name, self.options)


def make_modules(rec: Recorder, build_dir) -> dict:
    """``{module name: module}`` for ``sys.modules``: the stand-in ``cupy`` and ``cupyx`` trees."""
    builds = _HostBuilds(build_dir)
    cupy = types.ModuleType("cupy")
    cupy.__doc__ = "recording stand-in for CuPy (tests/recording_cupy.py)"
    rec.module = cupy
    cupy.ndarray = ndarray
    cupy.is_available = lambda: True
    cupy.asarray = lambda obj, dtype=None, order=None, *, blocking=False: _asarray(rec, obj, dtype, order)
    cupy.array = lambda obj, dtype=None, copy=True, order="K", **kw: _asarray(rec, obj, dtype, order, copy=copy)

    def asnumpy(a, stream=None, order="C", out=None, blocking=True):
        if isinstance(a, ndarray):
            h = a._to_host("asnumpy")
            if out is not None:
                out[...] = h
                return out
            return h
        return np.asarray(a, order=order)
    cupy.asnumpy = asnumpy
    cupy.get_array_module = lambda *args: cupy if any(isinstance(a, ndarray) for a in args) else np
    cupy.RawKernel = lambda *a, **k: _RawKernel(rec, builds, *a, **k)
    cupy.RawModule = lambda *a, **k: _RawModule(rec, builds, *a, **k)
    for _n in ("empty", "zeros", "ones", "full"):
        def make(name=_n):
            fn = getattr(np, name)

            def f(shape, *args, **kw):
                rec_name = name
                r = _wrap_new(rec, fn(shape, *args, **kw))
                if rec_name not in _NO_KERNEL:
                    rec.record("launch", rec_name)
                return r
            f.__name__ = name
            return f
        setattr(cupy, _n, make())

    def module_getattr(name):
        v = getattr(np, name)
        if isinstance(v, np.ufunc):
            w = _Ufunc(rec, v)
        elif isinstance(v, type) or isinstance(v, (numbers.Number, np.dtype)) or name.startswith("__"):
            return v
        elif callable(v):
            def w(*args, __fn=v, __name=name, **kw):
                return _call(rec, __fn, args, kw, __name)
            w.__name__ = name
        else:
            raise AttributeError(f"the stand-in cupy has no {name!r}")
        setattr(cupy, name, w)
        return w
    cupy.__getattr__ = module_getattr

    lib = types.ModuleType("cupy.lib")
    stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    stride_tricks.as_strided = lambda x, shape=None, strides=None: _call(
        rec, np.lib.stride_tricks.as_strided, (x,), {"shape": shape, "strides": strides}, "as_strided_view")
    lib.stride_tricks = stride_tricks
    cupy.lib = lib

    cuda = types.ModuleType("cupy.cuda")
    cuda.Device = lambda device=None: _Device(rec, device)
    runtime = types.ModuleType("cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: rec.n_devices
    runtime.getDevice = lambda: rec.current_device
    runtime.getDeviceProperties = lambda i: {"name": b"stand-in cupy device", "totalGlobalMem": 1 << 34,
                                             "multiProcessorCount": 132, "major": 9, "minor": 0}
    cuda.runtime = runtime
    cuda.get_current_stream = lambda: _Stream(rec)
    cuda.Stream = lambda null=False, non_blocking=False, ptds=False: _Stream(rec, null, non_blocking, ptds)
    cupy.cuda = cuda

    cupyx = types.ModuleType("cupyx")

    def scatter_add(a, slices, value):
        un = _Unwrapper(rec, "scatter_add")
        np.add.at(a._a, _wrap_indices(_unwrap_index(rec, slices), a._a.shape), un(value))
        un.check_host()
        rec.record("launch", "cupyx.scatter_add")
    cupyx.scatter_add = scatter_add
    cupyx.empty_pinned = lambda shape, dtype=float, order="C": np.empty(shape, dtype, order).view(_PinnedArray)
    scipy_ = types.ModuleType("cupyx.scipy")
    special = types.ModuleType("cupyx.scipy.special")
    import scipy.special

    special.erf = _Ufunc(rec, scipy.special.erf)
    scipy_.special = special
    cupyx.scipy = scipy_
    return {"cupy": cupy, "cupy.lib": lib, "cupy.lib.stride_tricks": stride_tricks, "cupy.cuda": cuda,
            "cupy.cuda.runtime": runtime, "cupyx": cupyx, "cupyx.scipy": scipy_, "cupyx.scipy.special": special}


def to_host(a):
    """A NumPy copy of a stand-in device array (or of anything else) without counting a sync."""
    return a._a.copy() if isinstance(a, ndarray) else np.asarray(a)


def install(monkeypatch, build_dir, strict: bool = True, n_devices: int = 1):
    """Put the stand-in in ``sys.modules`` (``cupy``, ``cupyx`` ...) for one test and build the ``cupy``
    backend through the registry, with every cache that could hold an earlier ``cupy`` cleared:
    the registry's cupy backends, the fused optimizer kernels and the Philox modules. Returns ``(recorder, backend)``.
    Skips the test when there is no C compiler for the host builds of the RawKernels."""
    import shutil

    import pytest

    from backprop_gpu.array import optim, registry
    from backprop_gpu.array.optim import cupy_impl
    from backprop_gpu.array.rng import cupy_impl as rng_cupy

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler (cc/gcc) to build the stand-in RawKernels for the host")
    rec = Recorder(strict=strict, n_devices=n_devices)
    for name, mod in make_modules(rec, build_dir).items():
        monkeypatch.setitem(sys.modules, name, mod)
    # a fresh cupy backend; the others stay (the default one made first, so that it outlives the
    # test in the registry's own table), so that bg.manual_seed still reaches them
    registry.default_backend()
    monkeypatch.setattr(registry, "_instances", {k: b for k, b in registry._instances.items() if k[0] != "cupy"})
    monkeypatch.setattr(optim, "_cache", {})
    monkeypatch.setattr(cupy_impl, "_kernels", {})
    monkeypatch.setattr(cupy_impl, "_sm_count", {})
    monkeypatch.setattr(rng_cupy, "_modules", {})
    monkeypatch.setattr(rng_cupy, "_sm_count", {})
    return rec, registry.get_backend("cupy")
