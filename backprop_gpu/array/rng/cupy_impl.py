"""The ``cupy`` target: the CUDA C of :mod:`.cuda_source`, compiled by NVRTC through CuPy's RawModule.

The module is compiled once per device on first use (then cached here and in
CuPy's on-disk kernel cache); each draw is one grid-stride launch on the current
stream. Nothing here touches CuPy at import time.
"""
from __future__ import annotations

import numpy as np

from . import scalar
from .cuda_source import SOURCE, kernel_name

THREADS = 256
OPTIONS = ("--std=c++14",)

_modules: dict = {}
_sm_count: dict = {}


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("the cupy Philox kernels need CuPy (pip install 'backprop_gpu[gpu]')") from e
    if not cupy.is_available():
        raise RuntimeError("the cupy Philox kernels need a CUDA GPU and driver; cupy.is_available() is False")
    return cupy


def run(kind: str, out, k0, k1, offset, *args) -> None:
    """Fill the 1-D contiguous CuPy array ``out`` with draw ``kind`` at ``offset``, one launch."""
    n = out.shape[0]
    if n == 0:
        return
    name = kernel_name(kind, out.dtype.name if kind == "normal" else None)
    launch(name, out, -(-n // scalar.PER_BLOCK[kind]), (out, np.int64(n), k0, k1, offset, *args))


def launch(name: str, like, threads: int, args) -> None:
    """Launch kernel ``name`` of :data:`SOURCE` on ``like``'s device (compiling the module there on
    first use) over ``threads`` grid-stride threads (at most 32 blocks per SM)."""
    cupy = _cupy()
    dev = like.device
    mod = _modules.get(dev.id)
    if mod is None:
        with dev:
            mod = _modules[dev.id] = cupy.RawModule(code=SOURCE, options=OPTIONS)
        _sm_count[dev.id] = dev.attributes["MultiProcessorCount"]
    blocks = max(1, min(-(-threads // THREADS), 32 * _sm_count[dev.id]))
    with dev:  # launched on like's device, whichever is current
        mod.get_function(name)((blocks,), (THREADS,), args)
