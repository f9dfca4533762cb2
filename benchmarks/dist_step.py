"""Time data-parallel MLP steps under mpiexec; rank 0 prints the median step time in ms.

usage: mpiexec -n N python benchmarks/dist_step.py STEPS GLOBAL_BATCH
"""
import sys
import time

import numpy as np

import backprop_gpu as bg
from backprop_gpu import distributed as dist
from backprop_gpu import models, optim
from backprop_gpu.data import ArrayDataset, DataLoader
from backprop_gpu.nn import functional as F

steps, batch = int(sys.argv[1]), int(sys.argv[2])
rank, world = dist.init()
bg.manual_seed(0)
rng = np.random.default_rng(0)
data = ArrayDataset(rng.random((batch * 4, 784), dtype=np.float32), rng.integers(0, 10, batch * 4), "bench")
model = models.mlp(784, 10, (512, 512))
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
dist.broadcast_parameters(model)
loader = DataLoader(data, batch, shuffle=True, rank=rank, world_size=world)
times = []
while len(times) < steps:
    for x, y in loader:
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        dist.all_reduce_gradients(opt)
        opt.step()
        times.append(time.perf_counter() - t)
if rank == 0:
    print(f"{1e3 * np.median(times[3:]):.3f}")
