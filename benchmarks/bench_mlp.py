"""One SGD training step of a 784-1024-1024-10 ReLU MLP with cross-entropy, batch 256, float32."""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from backprop_gpu.app import models
from backprop_gpu.nn import functional as F
from common import GPU_BACKENDS, TORCH, needs_torch, tag

WORKLOAD = "MLP step 784-1024-1024-10, batch 256"
SIZES = (784, 1024, 1024, 10)
BATCH = 256


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], BATCH)


def step_ours(backend):
    """One SGD step of our MLP on ``backend`` (compiled and warmed up)."""
    bg.manual_seed(0)
    model = models.mlp(SIZES[0], SIZES[-1], SIZES[1:-1]).to(backend)
    opt = optim.SGD(model.parameters(), lr=0.01)
    xn, yn = data()
    x, y = bg.tensor(xn, device=backend), bg.tensor(yn, device=backend)
    b = bg.get_backend(backend)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        b.synchronize()
    for _ in range(3):  # compile kernels, fill the allocator's cache
        step()
    return step


def step_handwritten_numpy():
    """A hand-written NumPy forward + backward + SGD update (what a careful person writes)."""
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((i, o)).astype(np.float32) * np.float32(1 / np.sqrt(i)) for i, o in zip(SIZES, SIZES[1:])]
    bs = [np.zeros(o, np.float32) for o in SIZES[1:]]
    x, y = data()
    lr = np.float32(0.01)

    def step():
        acts = [x]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = acts[-1] @ w
            h += b
            if i < len(ws) - 1:
                np.maximum(h, 0, out=h)
            acts.append(h)
        z = acts[-1]
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        p[np.arange(BATCH), y] -= 1
        g = p / BATCH
        for i in range(len(ws) - 1, -1, -1):
            gw = acts[i].T @ g
            gb = g.sum(0)
            if i:
                g = g @ ws[i].T
                g *= acts[i] > 0
            ws[i] -= lr * gw
            bs[i] -= lr * gb
    return step


def step_matmul_floor():
    """The 8 matrix products of a step (3 forward, 5 backward) and nothing else: the floor."""
    rng = np.random.default_rng(0)
    ws = [rng.random((i, o), dtype=np.float32) for i, o in zip(SIZES, SIZES[1:])]
    x, _ = data()
    hs = [x, rng.random((BATCH, 1024), dtype=np.float32), rng.random((BATCH, 1024), dtype=np.float32)]
    gs = [rng.random((BATCH, o), dtype=np.float32) for o in SIZES[1:]]

    def step():
        for h, w in zip(hs, ws):
            h @ w
        for i in range(3):
            hs[i].T @ gs[i]
        for i in (1, 2):
            gs[i] @ ws[i].T
    return step


def step_torch(device):
    """The same step in PyTorch eager on ``device``."""
    TORCH.manual_seed(0)
    nn = TORCH.nn
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10)).to(device)
    opt = TORCH.optim.SGD(model.parameters(), lr=0.01)
    xn, yn = data()
    x, y = TORCH.from_numpy(xn).to(device), TORCH.from_numpy(yn).to(device)
    sync = TORCH.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sync()
    for _ in range(3):
        step()
    return step


@pytest.mark.parametrize("backend", ["numpy", "numba"] + GPU_BACKENDS)
def test_mlp_step_ours(benchmark, backend):
    step = step_ours(backend)
    tag(benchmark, WORKLOAD, f"backprop_gpu[{backend}]", device=str(bg.get_backend(backend).device))
    benchmark(step)


def test_mlp_step_handwritten_numpy(benchmark):
    tag(benchmark, WORKLOAD, "hand-written numpy", role="reference")
    benchmark(step_handwritten_numpy())


def test_mlp_matmul_floor(benchmark):
    tag(benchmark, WORKLOAD, "8 matmuls only", role="floor")
    benchmark(step_matmul_floor())


@needs_torch
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if TORCH is not None and TORCH.cuda.is_available() else []))
def test_mlp_step_torch(benchmark, device):
    step = step_torch(device)
    tag(benchmark, WORKLOAD, f"torch {TORCH.__version__} eager ({device})", role="torch", device=device)
    benchmark(step)
