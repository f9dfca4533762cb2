"""CPU target: a Numba ``prange`` loop over the flat buffers.

``error_model='numpy'`` matters: Python's error model adds a zero-division
check to every ``/`` that stops vectorisation (measured 3x slower for Adam).
No ``fastmath``: the kernels must round as the NumPy reference does.

Unless the user chose one (``NUMBA_THREADING_LAYER``), the ``workqueue``
threading layer is used: the OpenMP layer's workers spin after each parallel
region and starve the BLAS threads of the matmuls that follow, which made a
784-1024-1024-10 training step 26 ms instead of 18.7 ms on 2 cores. The
workqueue layer must not be entered from two Python threads at once.

Compiled loops are cached on disk (``cache=True``). Numba can only cache a
function that lives in a file, so each variant's generated loop is written to
its own module under :func:`source_dir`, named by a digest of the rule file
and the loop text: a changed rule is a new file, never a stale cache hit.
Where that directory cannot be written, the loop is compiled in memory.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path
from types import FunctionType

from ..cpu_vectors import use_widest_vectors

use_widest_vectors()  # before Numba's code generator starts (see cpu_vectors)

import numba  # noqa: E402
import numpy as np  # noqa: E402

from . import precision, rules  # noqa: E402
from .codegen import loop_source, n_hypers  # noqa: E402

_JIT = dict(error_model="numpy")
#: buffers of fewer elements are updated on the calling thread: on the 2-core benchmark VM
#: waking the worker threads cost ~0.3-0.5 ms a launch, more than a parallel pass saves below
#: a few million elements (a 1.9M-parameter SGD step inside the MLP training step: 0.81 ms
#: serial, 0.86 ms parallel)
PARALLEL_MIN = 1 << 22


def _prefer_workqueue() -> None:
    if numba.config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def source_dir() -> Path:
    """Where generated loop modules (and Numba's cache of them) live.

    ``$NUMBA_CACHE_DIR/backprop_gpu_fused`` if set, else
    ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/backprop_gpu/fused``.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "backprop_gpu_fused"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "backprop_gpu" / "fused"


def renamed(fn, suffix):
    """``fn`` under its name plus ``suffix``. Numba's disk cache keys a function by its name, line
    and bytecode, not by its compile options: compiled under one name, the parallel version loaded
    the serial one's machine code from the cache (or the serial the parallel's), and ran serial."""
    g = FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    g.__qualname__, g.__module__ = fn.__qualname__ + suffix, fn.__module__
    return g


def _module_from_file(src: str, stem: str, globals_: dict):
    """Write ``src`` to ``<source_dir>/<stem>_<digest>.py`` (atomically) and import it with ``globals_`` bound."""
    # the digest covers the files whose functions the loop calls (rule, codecs): an edit is a new file
    digest = hashlib.sha256(rules.__name__.encode() + Path(rules.__file__).read_bytes()
                            + Path(precision.__file__).read_bytes() + src.encode()
                            + numba.__version__.encode()).hexdigest()[:16]
    d = source_dir()
    path = d / f"{stem}_{digest}.py"
    if not path.exists():
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write("import numba\n\n" + src)
        os.replace(tmp, path)  # concurrent builders write identical text: last rename wins harmlessly
    name = f"_backprop_gpu_fused_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    for k, v in globals_.items():  # globals of the loop (rule, codecs); the file name pins which variant
        setattr(mod, k, v)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod  # a cached loop's environment is found again by its module's name
    return mod


@functools.lru_cache(maxsize=None)
def _codecs() -> dict:
    """The float16/bfloat16 codecs compiled for the CPU: ``{name: (load, store)}`` (see :mod:`.precision`)."""
    jit = numba.njit(**_JIT)
    cast = precision.codecs(jit(precision.numpy_as_float), jit(precision.numpy_as_bits))
    return {name: (jit(load), jit(store)) for name, (load, store) in cast.items()}


def build(rule_name, flags, dtype, masked=False, device=False):
    """``kernel(p, g, states, hypers)``: one in-place pass over 1-D contiguous arrays of ``dtype``,
    parallel from :data:`PARALLEL_MIN` elements. ``masked``: ``kernel(p, g, states, hypers, mask)``
    updates only the elements where the uint8 ``mask`` is nonzero. ``device``:
    ``kernel(p, g, states, consts, scalars[, mask])``, the device-scalar form (``codegen``).

    float16 and bfloat16 (which Numba's CPU target does not have): ``p`` and ``g`` are viewed as
    uint16, each element stepped in float32 on the float32 states from its float32 master weight (the
    last of ``states``; see ``codegen.loop_source``), which is written, and ``p`` stored as its rounding
    to nearest even, in the same single pass."""
    _prefer_workqueue()
    py_fn = rules.scalar_fn(rule_name, flags, math.sqrt, max)
    slots = rules.state_slots(rule_name, flags)
    low = precision.is_low_precision(dtype)
    names = (f"load_{dtype.name}", f"store_{dtype.name}") if low else None  # in the text: one file per dtype
    rule = rules.get(rule_name)
    n_consts = len(rule.const_names) if device else None
    src = loop_source("loop", slots, n_hypers(py_fn, len(slots)), "", "numba.prange(p.shape[0])", masked, names,
                      n_consts)
    fn = numba.njit(**_JIT)(py_fn)
    ct = precision.compute_dtype(dtype).type
    globals_ = {"fn": fn, **(dict(zip(names, _codecs()[dtype.name])) if low else {})}
    if device:  # the compute dtype's name is in the text (ct = float32 or float64), so one file per dtype
        src = src.replace("ct(", f"ct_{ct.__name__}(")
        globals_.update({"hfn": numba.njit(**_JIT)(rule.hyper_math(flags)), f"ct_{ct.__name__}": ct})
    stem = f"{rule_name}_{''.join('1' if f else '0' for f in flags)}{'_masked' if masked else ''}" \
           f"{'_dev' if device else ''}{'_' + dtype.name if low or device else ''}"
    try:
        py_loop = _module_from_file(src, stem, globals_).loop
        cache = True
    except OSError:  # read-only home or cache dir: compile in memory, uncached
        ns = {**globals_, "numba": numba}
        exec(compile(src, f"<fused {rule_name} loop>", "exec"), ns)
        py_loop, cache = ns["loop"], False
    # both compile lazily, on first use; prange runs as range in the serial one
    serial = numba.njit(cache=cache, **_JIT)(py_loop)
    parallel = numba.njit(parallel=True, cache=cache, **_JIT)(renamed(py_loop, "_parallel"))
    t = precision.compute_dtype(dtype).type
    zero = t(0)

    def kernel(p, g, states, hypers, *mask):
        loop = parallel if p.shape[0] >= PARALLEL_MIN else serial
        if low:
            p, g = p.view(np.uint16), g.view(np.uint16)
        # hypers in the compute dtype: float32 arrays keep float32 arithmetic and one compiled signature
        loop(p, g, *states, *[t(h) for h in hypers], zero, *mask)

    def device_kernel(p, g, states, consts, scalars, *mask):
        loop = parallel if p.shape[0] >= PARALLEL_MIN else serial
        if low:
            p, g = p.view(np.uint16), g.view(np.uint16)
        loop(p, g, *states, *[np.float64(c) for c in consts], *scalars, zero, *mask)
    k = device_kernel if device else kernel
    # for inspection (signatures, cache hits): the serial loop, which small buffers take
    k.dispatcher, k.parallel_dispatcher = serial, parallel
    return k


@functools.lru_cache(maxsize=None)
def _check_loops():
    """The found-inf check over float32/float64 and over uint16 patterns (per codec), serial and parallel:
    ``{key: (serial, parallel)}``; the sum reduction is what ``prange`` parallelises."""
    nonfinite = numba.njit(**_JIT)(rules.nonfinite)

    def make(load):
        def check(g, found_inf):
            bad = 0.0
            for i in numba.prange(g.shape[0]):
                bad += nonfinite(load(g[i]))
            if bad != 0:
                found_inf[0] = 1.0
        return numba.njit(**_JIT)(check), numba.njit(parallel=True, **_JIT)(check)
    out = {"float": make(numba.njit(**_JIT)(lambda x: x))}
    for name, (load, _) in _codecs().items():
        out[name] = make(load)
    return out


def build_check(dtype):
    """``check(g, found_inf)``: ``found_inf[0] = 1`` if ``g`` holds an inf or NaN (one pass, parallel from
    :data:`PARALLEL_MIN` elements)."""
    low = precision.is_low_precision(dtype)
    serial, parallel = _check_loops()[dtype.name if low else "float"]

    def check(g, found_inf):
        if low:
            g = g.view(np.uint16)
        (parallel if g.shape[0] >= PARALLEL_MIN else serial)(g, found_inf)
    return check
