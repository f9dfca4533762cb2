"""The ``numba-cuda`` target: the Philox kernels as Numba CUDA grid-stride loops over blocks.

One thread computes one Philox block (four words) per iteration and writes the
elements it gives (:mod:`.scalar` bodies, inlined at the Numba IR level), so the
same kernels compile to PTX with no driver present (:func:`compile_ptx_check`).
Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) they run on NumPy arrays on a
2 x 32 grid (:func:`backprop_gpu.array.optim.numba_cuda.launch_config`), for
draws of up to :data:`SIMULATED_MAX` elements; larger ones take the NumPy
statement of the same stream.
"""
from __future__ import annotations

import numpy as np

from ..modules import cuda_simulated
from . import numpy_impl, scalar

_kernels: dict = {}
#: under the simulator, the largest draw the kernel itself makes (see :func:`run`)
SIMULATED_MAX = 4096


def _kernel_fn(kind):
    """The un-jitted grid-stride kernel for draw ``kind`` (the tail block on thread 0)."""
    from numba import cuda

    src = scalar.loop_source(scalar.PER_BLOCK[kind], scalar.EXTRA[kind],
                             "start = cuda.grid(1)\nstride = cuda.gridsize(1)", "range(start, nfull, stride)",
                             "rest > 0 and start == 0")
    ns = {"cuda": cuda, "values": getattr(scalar.make(cuda.jit(device=True, inline="always")), kind)}
    exec(compile(src, f"<philox {kind} cuda kernel>", "exec"), ns)
    return ns["loop"]


def run(kind: str, out, k0, k1, offset, *args) -> None:
    """Fill the 1-D contiguous device array ``out`` with draw ``kind`` at ``offset``, one launch."""
    from numba import cuda

    from ..optim.numba_cuda import launch_config

    n = out.shape[0]
    if n == 0:
        return
    if n > SIMULATED_MAX and cuda_simulated():
        # each simulated thread is Python: a big draw would take minutes. The NumPy statement of the
        # stream gives the same numbers (tests/array/test_philox.py checks the kernel against it)
        numpy_impl.run(kind, out, k0, k1, offset, *args)
        return
    k = _kernels.get(kind)
    if k is None:
        k = _kernels[kind] = cuda.jit(_kernel_fn(kind))
    blocks, threads = launch_config(-(-n // scalar.PER_BLOCK[kind]))
    k[blocks, threads](out, k0, k1, offset, *args)


def compile_ptx_check(kind: str, out_dtype, cc=(9, 0)) -> str:
    """PTX of draw ``kind``'s whole kernel writing ``out_dtype`` for compute capability ``cc``, without a
    GPU. Needs NVRTC (``numba-cuda[cu13]``) and the simulator off."""
    from numba import cuda, from_dtype, types

    ty = {"shift": types.uint64, "scale": types.float32, "low": types.int64, "span": types.uint64,
          "p": types.float64 if kind == "bernoulli64" else types.float32}
    sig = (from_dtype(np.dtype(out_dtype))[::1], types.uint64, types.uint64, types.uint64,
           *[ty[a] for a in scalar.EXTRA[kind]])
    ptx, _ = cuda.compile_ptx(_kernel_fn(kind), sig, cc=cc)
    return ptx
