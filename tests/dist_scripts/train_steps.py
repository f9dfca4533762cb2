"""Run K data-parallel steps and save the parameters (rank 0). Used by tests/test_distributed.py.

usage: python train_steps.py OUT.npz STEPS [--mismatch] [--die-rank R]
"""
import os
import sys

import numpy as np

import backprop_gpu as bg
from backprop_gpu import distributed as dist
from backprop_gpu import models, optim
from backprop_gpu.data import ArrayDataset, DataLoader
from backprop_gpu.nn import functional as F

out, steps = sys.argv[1], int(sys.argv[2])
rank, world = dist.init()
hidden = (16 + rank,) if "--mismatch" in sys.argv else (16,)
die = int(sys.argv[sys.argv.index("--die-rank") + 1]) if "--die-rank" in sys.argv else None

bg.manual_seed(rank + 100)  # different local inits: the broadcast must make them equal
rng = np.random.default_rng(0)
data = ArrayDataset(rng.random((64, 10)).astype(np.float32), rng.integers(0, 3, 64), "toy")
model = models.mlp(10, 3, hidden)
opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
try:
    dist.broadcast_parameters(model)
except dist.DistributedError as e:
    print(f"rank {rank}: {e}", flush=True)
    sys.exit(4)
loader = DataLoader(data, 16, shuffle=True, seed=7, rank=rank, world_size=world)
done, calls = 0, 0
while done < steps:
    for x, y in loader:
        if die is not None and rank == die and done == 1:
            os._exit(9)  # a rank that dies mid-training
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        calls += dist.all_reduce_gradients(opt, timeout=10)
        opt.step()
        done += 1
        if done == steps:
            break
if rank == 0:
    np.savez(out, calls=calls, **{k: v.numpy() for k, v in model.state_dict().items()})
