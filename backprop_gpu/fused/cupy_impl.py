"""CuPy target: the CUDA C kernels of ``kernels/optim.cu``, compiled by NVRTC.

Each variant is a template instantiation named through ``name_expressions``;
one grid-stride launch covers a whole flat buffer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..optim import rules

THREADS = 256
#: every state buffer each kernel takes, in its argument order
KERNEL_STATES = {
    "sgd": ("momentum_buffer",),
    "adagrad": ("sum",),
    "adadelta": ("square_avg", "acc_delta"),
    "rmsprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}
#: how many hyperparameters each kernel takes (shorter variants are zero-padded)
KERNEL_HYPERS = {"sgd": 5, "adagrad": 3, "adadelta": 5, "rmsprop": 6, "adam": 8, "adamw": 8}


def source() -> str:
    """The text of ``kernels/optim.cu`` from the source checkout (install with ``pip install -e .``)."""
    here = Path(__file__).resolve().parents[2] / "kernels" / "optim.cu"
    if not here.exists():
        raise FileNotFoundError(f"the cupy backend's CUDA sources are not at {here}; install backprop_gpu from a "
                                "source checkout with `pip install -e .`")
    return here.read_text()


def name_expression(rule_name: str, flags: tuple, dtype) -> str:
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
    import cupy

    expr = name_expression(rule_name, flags, dtype)
    fn = _module(expr).get_function(expr)
    names = rules.get(rule_name).state_names(flags)
    slots = KERNEL_STATES[rule_name]
    n_hypers = KERNEL_HYPERS[rule_name]
    ctype = np.dtype(dtype).type
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]

    def kernel(p, g, states, hypers):
        by_name = dict(zip(names, states))
        bufs = [by_name.get(s, p) for s in slots]  # unused slots get a dummy pointer
        hs = [ctype(h) for h in hypers] + [ctype(0)] * (n_hypers - len(hypers))
        n = p.size
        blocks = max(1, min((n + THREADS - 1) // THREADS, 32 * sms))
        fn((blocks,), (THREADS,), (p, g, *bufs, np.int64(n), *hs))
    return kernel
