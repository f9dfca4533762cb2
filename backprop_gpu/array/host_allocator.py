"""Keep freed host memory for reuse instead of handing it back to the kernel.

A training step allocates and frees the same temporaries (activations,
gradients, im2col columns) every iteration. glibc's malloc serves blocks above
its mmap threshold (128 KiB at first, adapted up to 32 MiB) with fresh
``mmap`` calls and trims the top of the heap after each ``free``, so every step
page-faults its temporaries in again and the kernel zeroes them. On the 2-core
benchmark VM this cost more than the arithmetic: the small CNN's step took
33–40 ms with glibc's defaults and 17–24 ms with the settings below, and a
PyTorch CPU step in the same process went from 12.2 to 7.8 ms.

:func:`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB)
and the trim threshold to 1 GiB: blocks up to 32 MiB come from the heap and
freed ones are reused. The cost is that the process keeps its peak heap
(up to 1 GiB of it free) instead of returning it, as caching allocators do.

It is called once, when the first CPU backend is created. It does nothing
where malloc is not glibc's, when the user set any ``MALLOC_*`` variable
(their tuning wins), or when ``BACKPROP_GPU_HOST_ALLOCATOR=system``.
"""
from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("backprop_gpu")

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30

_state: dict = {}


def _glibc_mallopt():
    if not hasattr(os, "confstr"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):
        return None  # not glibc (musl, macOS)
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def why_not() -> str | None:
    """Why the tuning does not apply here, or ``None`` if it does."""
    if os.environ.get("BACKPROP_GPU_HOST_ALLOCATOR", "").lower() == "system":
        return "BACKPROP_GPU_HOST_ALLOCATOR=system"
    user = sorted(k for k in os.environ if k.startswith("MALLOC_"))
    if user:
        return f"the environment sets {', '.join(user)}"
    if _glibc_mallopt() is None:
        return "malloc is not glibc's"
    return None


def keep_freed_memory() -> bool:
    """Apply the tuning once per process; returns whether it is in effect."""
    if "applied" in _state:
        return _state["applied"]
    why = why_not()
    ok = False
    if why is None:
        mallopt = _glibc_mallopt()
        ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        why = None if ok else "mallopt refused the settings"
    _state["applied"] = ok
    _state["why_not"] = why
    log.debug("host allocator: %s", "keeping freed blocks up to 32 MiB for reuse" if ok else f"system ({why})")
    return ok


def status() -> dict:
    """``{"applied": bool, "why_not": str | None}`` (after the first CPU backend exists)."""
    return dict(_state)
