"""Optimizer steps on 10M float32 parameters, as 1 tensor and as 200 tensors.

Every optimizer on every backend available, torch.optim (default, foreach,
fused where it exists) in the same run, and a memory-traffic floor: a fused
loop moving the same bytes as Adam (read p, g, m, v; write p, m, v: 28 B per
element) with no arithmetic to speak of.
"""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from common import GPU_BACKENDS, TORCH, memory_triad, needs_torch, tag

N = 10_000_000
LAYOUTS = {"1 tensor": [N], "200 tensors": [N // 200] * 200}
OPTIMIZERS = {"sgd": dict(lr=0.01, momentum=0.9), "adagrad": dict(lr=0.01), "adadelta": dict(lr=1.0),
              "rmsprop": dict(lr=0.01), "adam": dict(lr=1e-3), "adamw": dict(lr=1e-3)}
TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW"}
TORCH_FUSED = {"sgd", "adam", "adamw", "adagrad"}


def workload(name, layout):
    return f"optim {name}, 10M float32 as {layout}"


def params_for(backend, sizes):
    rng = np.random.default_rng(0)
    ps = [bg.tensor(rng.standard_normal(n, dtype=np.float32), device=backend, requires_grad=True) for n in sizes]
    for p in ps:
        p.grad = bg.tensor(rng.standard_normal(p.numel(), dtype=np.float32) * 0.01, device=backend)
    return ps


def torch_optimizer(name, sizes, impl):
    """torch.optim's ``name`` ("default", "foreach" or "fused" implementation) over parameters of
    ``sizes`` with gradients, after one step."""
    g = TORCH.Generator().manual_seed(0)
    params = [TORCH.randn(n, generator=g, requires_grad=True) for n in sizes]
    for p in params:
        p.grad = TORCH.randn(p.numel(), generator=g) * 0.01
    kwargs = dict(OPTIMIZERS[name])
    if impl == "foreach":
        kwargs["foreach"] = True
    elif impl == "fused":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = False
    opt = getattr(TORCH.optim, TORCH_NAMES[name])(params, **kwargs)
    opt.step()
    return opt


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["numpy", "numba"] + GPU_BACKENDS)
def test_optimizer_step_ours(benchmark, backend, name, layout):
    if backend == "numpy" and layout == "200 tensors":
        pytest.skip("the numpy reference is timed on one layout only")
    params = params_for(backend, LAYOUTS[layout])
    opt = optim.OPTIMIZERS[name](params, **OPTIMIZERS[name])
    b = bg.get_backend(backend)
    opt.step()  # compile outside the timing
    b.synchronize()
    before = b.launch_count

    def step():
        opt.step()
        b.synchronize()
    tag(benchmark, workload(name, layout), f"backprop_gpu[{backend}]", device=str(b.device))
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)
    launches = b.launch_count - before
    assert launches == benchmark.stats.stats.rounds + 2  # one launch per step, whatever the layout


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_memory_triad_floor(benchmark, layout):
    """A numba prange loop with Adam's traffic (4 reads, 3 writes per element)."""
    triad = memory_triad(N)
    tag(benchmark, workload("adam", layout), "memory triad, 28 B/element", role="floor", device="cpu")
    benchmark.pedantic(triad, rounds=15, warmup_rounds=2)


@needs_torch
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("impl", ["default", "foreach", "fused"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step_torch(benchmark, name, impl, layout):
    if impl == "fused" and name not in TORCH_FUSED:
        pytest.skip(f"torch {name} has no fused CPU path")
    opt = torch_optimizer(name, LAYOUTS[layout], impl)
    tag(benchmark, workload(name, layout), f"torch {TORCH.__version__} {impl}", role="torch", device="cpu",
        torch_impl=impl)
    benchmark.pedantic(opt.step, rounds=15, warmup_rounds=2)
