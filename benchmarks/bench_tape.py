"""What the tape adds on top of NumPy: tiny graphs, forward + backward."""
import numpy as np
import pytest

import backprop_gpu as bg
from common import TORCH, needs_torch, tag


def tiny_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)


def chain(a, b, n_ops=20):
    """20 elementwise ops on (64,)."""
    y = a
    for i in range(n_ops // 4):
        y = (y * b + a) * 0.5 - b
        y = y.tanh() if hasattr(y, "tanh") else np.tanh(y)
    return y.sum()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_tiny_graph_ours(benchmark, backend):
    x, y = tiny_inputs(4)
    a = bg.tensor(x, device=backend, requires_grad=True)
    b = bg.tensor(y, device=backend, requires_grad=True)

    def step():
        a.grad = b.grad = None
        (a * b + a).sum().backward()
    tag(benchmark, "tape: (a*b+a).sum() fwd+bwd, (4,)", f"backprop_gpu[{backend}]")
    benchmark(step)
    np.testing.assert_allclose(a.grad.numpy(), y + 1)


def test_tiny_graph_numpy_forward_floor(benchmark):
    x, y = tiny_inputs(4)
    tag(benchmark, "tape: (a*b+a).sum() fwd+bwd, (4,)", "numpy forward only", role="floor")
    benchmark(lambda: (x * y + x).sum())


@needs_torch
def test_tiny_graph_torch(benchmark):
    x, y = tiny_inputs(4)
    a = TORCH.tensor(x, requires_grad=True)
    b = TORCH.tensor(y, requires_grad=True)

    def step():
        a.grad = b.grad = None
        (a * b + a).sum().backward()
    tag(benchmark, "tape: (a*b+a).sum() fwd+bwd, (4,)", f"torch {TORCH.__version__} eager", role="torch")
    benchmark(step)


@pytest.mark.parametrize("backend", ["numba"])
def test_chain_ours(benchmark, backend):
    x, y = tiny_inputs(64)
    a = bg.tensor(x, device=backend, requires_grad=True)
    b = bg.tensor(y, device=backend, requires_grad=True)

    def step():
        a.grad = b.grad = None
        chain(a, b).backward()
    tag(benchmark, "tape: 20-op elementwise chain fwd+bwd, (64,)", f"backprop_gpu[{backend}]")
    benchmark(step)


def test_chain_numpy_forward_floor(benchmark):
    x, y = tiny_inputs(64)
    tag(benchmark, "tape: 20-op elementwise chain fwd+bwd, (64,)", "numpy forward only", role="floor")
    benchmark(lambda: chain(x, y))


@needs_torch
def test_chain_torch(benchmark):
    x, y = tiny_inputs(64)
    a = TORCH.tensor(x, requires_grad=True)
    b = TORCH.tensor(y, requires_grad=True)

    def step():
        a.grad = b.grad = None
        chain(a, b).backward()
    tag(benchmark, "tape: 20-op elementwise chain fwd+bwd, (64,)", f"torch {TORCH.__version__} eager", role="torch")
    benchmark(step)
