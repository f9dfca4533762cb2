"""The widest vector registers for Numba's CPU code: 512 bits where the CPU has AVX-512.

LLVM's tuning for recent Intel server cores (Skylake-SP and later) prefers 256-bit vectors, so
Numba's loops use half of an AVX-512 machine's vector width: the compiled softmax's exponential
ran at 0.90 ms per million float32 values with 256-bit vectors and 0.57 ms with 512 (NumPy's own
AVX-512 ``exp``: 0.49), on a 2-core Intel Xeon (Emerald Rapids). Memory-bound loops (the optimizer
steps) measured the same either way.

:func:`use_widest_vectors` sets ``NUMBA_CPU_FEATURES`` to the host's features without that
preference (and ``numba.config.CPU_FEATURES``, if Numba is imported already), before Numba's CPU
code generator starts; Numba keys its disk cache by it. It leaves a ``NUMBA_CPU_NAME`` or
``NUMBA_CPU_FEATURES`` the user set alone, as it does ``BACKPROP_GPU_VECTOR_BITS=256``. The setting is the process's: other Numba code
in it compiles for the same vector width, as do processes it starts.
"""
from __future__ import annotations

import os


def use_widest_vectors() -> bool:
    """Let Numba's CPU code use 512-bit vectors on an AVX-512 CPU; returns whether it now does."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return False  # the user's choice
    if os.environ.get("BACKPROP_GPU_VECTOR_BITS", "").strip() == "256":
        return False
    try:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features().flatten()
    except Exception:  # no llvmlite, or it cannot read the host's features
        return False
    if "+avx512f" not in features.split(","):
        return False
    os.environ["NUMBA_CPU_FEATURES"] = features + ",-prefer-256-bit"
    import sys

    config = getattr(sys.modules.get("numba"), "config", None)
    if config is not None:  # imported already: its config was read then (it re-reads at each compile,
        config.CPU_FEATURES = os.environ["NUMBA_CPU_FEATURES"]  # but after making the code generator)
    return True
