"""CuPy target: the CUDA C kernels of ``kernels/optim.cu``, compiled by NVRTC.

Each variant is a template instantiation named through ``name_expressions``
(compiled on first use, then cached by CuPy); one grid-stride launch covers a
whole flat buffer. Every kernel takes ``p, g, *rule.all_states, n,
*rule.hyper_names`` in that order; the tests parse the ``.cu`` to check it.
Nothing here touches CuPy at import time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..optim import rules

THREADS = 256


def source() -> str:
    """The text of ``kernels/optim.cu``.

    Looked for in the source checkout (``<repo>/kernels``, the one place the CUDA
    C is kept), then in the ``backprop_gpu._cuda_src`` package, where a wheel
    build may copy it.
    """
    here = Path(__file__).resolve().parents[2] / "kernels" / "optim.cu"
    if here.exists():
        return here.read_text()
    try:
        from importlib.resources import files

        return (files("backprop_gpu._cuda_src") / "optim.cu").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    raise FileNotFoundError(f"the cupy backend's CUDA sources are not at {here} nor in backprop_gpu._cuda_src; "
                            "install backprop_gpu from a source checkout with `pip install -e .`")


def name_expression(rule_name: str, flags: tuple, dtype) -> str:
    """The template instance for one variant, e.g. ``adam<float, true, false, false, true>`` (AdamW)."""
    ctype = {np.dtype("float32"): "float", np.dtype("float64"): "double"}.get(np.dtype(dtype))
    if ctype is None:
        raise TypeError(f"the cupy optimizer kernels support float32 and float64, not {dtype}")
    b = ["true" if f else "false" for f in flags]
    if rule_name in ("adam", "adamw"):
        b = ["true" if rule_name == "adamw" else "false"] + b
    kernel = "adam" if rule_name == "adamw" else rule_name
    return f"{kernel}<{', '.join([ctype] + b)}>"


_modules: dict = {}


def _module(expr: str):
    import cupy

    key = expr
    if key not in _modules:
        _modules[key] = cupy.RawModule(code=source(), options=("--std=c++14",), name_expressions=[expr])
    return _modules[key]


def build(rule_name, flags, dtype):
    """``kernel(p, g, states, hypers)`` on CuPy arrays: one grid-stride launch on the current stream."""
    import cupy

    expr = name_expression(rule_name, flags, dtype)
    fn = _module(expr).get_function(expr)
    rule = rules.get(rule_name)
    names = rule.state_names(flags)
    ctype = np.dtype(dtype).type
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]

    def kernel(p, g, states, hypers):
        by_name = dict(zip(names, states))
        # the kernels take every state of their rule (rule.all_states order); a variant's unused ones get a
        # dummy pointer that the compiled-out branch never touches
        bufs = [by_name.get(s, p) for s in rule.all_states]
        n = p.size
        blocks = max(1, min((n + THREADS - 1) // THREADS, 32 * sms))
        fn((blocks,), (THREADS,), (p, g, *bufs, np.int64(n), *[ctype(h) for h in hypers]))
    return kernel
