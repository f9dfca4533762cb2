"""The ``numba`` target: the Philox kernels as Numba CPU loops over blocks (:mod:`.scalar` values).

Serial on purpose: on the 2-core VM the ``parallel=True`` compilation of the same
loop took 6.5 ms for 2**20 float32 uniforms against 2.0 ms serial (and 20 ms
against 7.8 ms for 2**22): the parfor lowering loses the scheduling of the
unconditional stores, and a parallel launch costs 0.3-0.5 ms besides.

Each loop is compiled on first use of its draw (0.8-1.4 s) and cached on disk as
the optimizer loops are (:func:`backprop_gpu.array.optim.numba_cpu.source_dir`),
in a file whose name covers the text of :mod:`.scalar` and :mod:`.philox`, so a later
process loads it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numba

from ..optim.numba_cpu import _module_from_file
from . import philox, scalar

_JIT = dict(error_model="numpy", nogil=True)
_loops: dict = {}
_values = None


def _build(kind):
    global _values
    if _values is None:
        _values = scalar.make(numba.njit(inline="always", error_model="numpy"))
    src = scalar.loop_source(scalar.PER_BLOCK[kind], scalar.EXTRA[kind], "", "range(nfull)", "rest")
    globals_ = {"values": getattr(_values, kind)}
    try:
        # the loop inlines the value functions (and philox's constants): their source names the cached file
        text = Path(scalar.__file__).read_bytes() + Path(philox.__file__).read_bytes()
        digest = hashlib.sha256(text).hexdigest()[:16]
        py_loop = _module_from_file(f"# values: {digest}\n" + src, f"philox_{kind}", globals_).loop
        cache = True
    except OSError:  # read-only home or cache dir: compile in memory, uncached
        ns = dict(globals_)
        exec(compile(src, f"<philox {kind} loop>", "exec"), ns)
        py_loop, cache = ns["loop"], False
    return numba.njit(cache=cache, **_JIT)(py_loop)


def run(kind: str, out, k0, k1, offset, *args) -> None:
    """Fill the 1-D contiguous ``out`` with draw ``kind`` (a :data:`.scalar.PER_BLOCK` name) at ``offset``."""
    loop = _loops.get(kind)
    if loop is None:
        loop = _loops[kind] = _build(kind)
    loop(out, k0, k1, offset, *args)
