"""Time data-parallel training steps of an MLP; rank 0 prints one JSON line. Used by benchmarks/bench_distributed.py.

usage: [mpiexec -n N] python step_timer.py [--steps K] [--warmup W] [--batch GLOBAL_B] [--hidden H]
                                            [--features F] [--device D]

The global batch is fixed (strong scaling): each of N ranks computes on B/N samples.
Reported: step_ms (wall time per step, between barriers, the slowest rank),
allreduce_ms (time inside all_reduce_gradients, mean over ranks; includes waiting
for the slower rank), params, world.
"""
import argparse
import json
import time

import numpy as np

import backprop_gpu as bg
from backprop_gpu import distributed as dist
from backprop_gpu import optim
from backprop_gpu.app import models
from backprop_gpu.nn import functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--batch", type=int, default=512)
ap.add_argument("--hidden", type=int, default=512)
ap.add_argument("--features", type=int, default=784)
ap.add_argument("--device", default="cpu")
a = ap.parse_args()

setup = dist.setup_for_training(a.device)
rank, world = setup.rank, setup.world_size
bg.manual_seed(0)
model = models.mlp(a.features, 10, (a.hidden, a.hidden)).to(setup.device)
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
setup.prepare(model)
rng = np.random.default_rng(rank)
local = a.batch // world
x = bg.tensor(rng.random((local, a.features), dtype=np.float32), device=setup.device)
y = bg.tensor(rng.integers(0, 10, local), device=setup.device)
backend = x.backend


def step():
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    t = time.perf_counter()
    setup.after_backward(opt)
    backend.synchronize()
    t_ar = time.perf_counter() - t
    opt.step()
    return t_ar


for _ in range(a.warmup):
    step()
backend.synchronize()
setup.barrier()
t0 = time.perf_counter()
ar = sum(step() for _ in range(a.steps))
backend.synchronize()
mine = time.perf_counter() - t0
setup.barrier()
total = time.perf_counter() - t0
if world > 1:
    from mpi4py import MPI

    c = dist.get_comm()
    total = c.allreduce(total, op=MPI.MAX)
    ar = c.allreduce(ar, op=MPI.SUM) / world
if setup.is_main:
    print(json.dumps({"world": world, "step_ms": 1e3 * total / a.steps, "allreduce_ms": 1e3 * ar / a.steps,
                      "params": model.num_parameters(), "global_batch": a.batch, "device": str(backend.device)}))
