"""One Adam training step of the small CNN (conv-BN-ReLU-pool x2, linear) on 28x28 images, batch 64."""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from backprop_gpu.app import models
from backprop_gpu.nn import functional as F
from common import GPU_BACKENDS, TORCH, needs_torch, tag

WORKLOAD = "CNN step (8,16 channels) 28x28, batch 64"
BATCH = 64


def data():
    rng = np.random.default_rng(0)
    return rng.random((BATCH, 784), dtype=np.float32), rng.integers(0, 10, BATCH)


def step_ours(backend):
    """One Adam step of our small CNN on ``backend`` (compiled and warmed up)."""
    bg.manual_seed(0)
    model = models.small_cnn(784, 10).to(backend)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xn, yn = data()
    x, y = bg.tensor(xn, device=backend), bg.tensor(yn, device=backend)
    b = bg.get_backend(backend)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        b.synchronize()
    for _ in range(3):  # compile kernels, fill the allocator's cache
        step()
    return step


def step_torch(device="cpu"):
    """The same model and step in PyTorch eager."""
    nn = TORCH.nn
    TORCH.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (1, 28, 28)),
                          nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).to(device)
    opt = TORCH.optim.Adam(model.parameters(), lr=1e-3)
    xn, yn = data()
    x, y = TORCH.from_numpy(xn).to(device), TORCH.from_numpy(yn).to(device)
    sync = TORCH.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
    for _ in range(3):
        step()
    return step


@pytest.mark.parametrize("backend", ["numba"] + GPU_BACKENDS)
def test_cnn_step_ours(benchmark, backend):
    step = step_ours(backend)
    tag(benchmark, WORKLOAD, f"backprop_gpu[{backend}]", device=str(bg.get_backend(backend).device))
    benchmark(step)


@needs_torch
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if TORCH is not None and TORCH.cuda.is_available() else []))
def test_cnn_step_torch(benchmark, device):
    step = step_torch(device)
    tag(benchmark, WORKLOAD, f"torch {TORCH.__version__} eager ({device})", role="torch", device=device)
    benchmark(step)
