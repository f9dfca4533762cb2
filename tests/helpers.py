"""Tensor makers shared by the backend-parametrized tests (each takes the fixture's backend object)."""
import numpy as np

import backprop_gpu as bg


def x64(backend, v, grad=True):
    """``v`` as a float64 tensor on ``backend``, requiring grad unless ``grad`` is False."""
    return bg.tensor(np.asarray(v, dtype=np.float64), device=backend, requires_grad=grad)


def idx(backend, arr):
    """An integer index array as a tensor on ``backend`` (CuPy wants device index arrays)."""
    return bg.tensor(np.asarray(arr, dtype=np.int64), device=backend)


def gpu_available() -> bool:
    """Whether CuPy sees a real CUDA GPU (False without CuPy or a driver)."""
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001 - a broken CuPy install is no GPU either
        return False


def compile_host_c(directory, source: str):
    """``source`` (C99) built into a shared library in ``directory`` and loaded with ctypes; skips
    the test when there is no C compiler. No FMA contraction: NumPy rounds every operation, and so
    must the C to compare within ulps."""
    import ctypes
    import shutil
    import subprocess

    import pytest

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build the generated C for the host")
    (directory / "optim.c").write_text(source)
    out = subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
                          "-o", str(directory / "optim.so"), str(directory / "optim.c"), "-lm"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return ctypes.CDLL(str(directory / "optim.so"))


def trained(hidden=(8,), steps=3, seed=0, opt_cls=None, **opt_kw):
    """A small MLP, its optimizer (Adam unless ``opt_cls``) and a StepLR after ``steps`` steps."""
    from backprop_gpu import optim
    from backprop_gpu.app import models
    from backprop_gpu.optim import lr_scheduler

    bg.manual_seed(seed)
    m = models.mlp(4, 3, hidden)
    opt = (opt_cls or optim.Adam)(m.parameters(), **({"lr": 0.01} | opt_kw))
    sched = lr_scheduler.StepLR(opt, 2, 0.5)
    x = bg.tensor(np.random.default_rng(seed).random((6, 4)).astype(np.float32))
    for _ in range(steps):
        opt.zero_grad()
        (m(x) ** 2).mean().backward()
        opt.step()
        sched.step()
    return m, opt, sched
