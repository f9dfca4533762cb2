"""Time data-parallel training steps of an MLP; rank 0 prints one JSON line. Used by benchmarks/bench_distributed.py.

usage: [mpiexec -n N] python step_timer.py [--steps K] [--warmup W] [--batch GLOBAL_B] [--hidden H]
                                            [--features F] [--device D] [--bucket-mb MB]

The global batch is fixed (strong scaling): each of N ranks computes on B/N samples. Two ways
of averaging the gradients alternate step by step in the one process, so drift of the machine
hits both alike: ``whole`` (backward, then one all-reduce of the whole flat buffer) and
``buckets`` (buckets all-reduced as backward completes them; ``--bucket-mb`` each, the first
at most 1 MB). Per way, medians over its steps of the slowest rank's time: step_ms, and
allreduce_ms, the time inside ``after_backward`` (what the step waits for communication,
including waiting for the slower rank). ``hidden``: the share of the whole buffer's
all-reduce time that buckets take off the step's wait, 1 - allreduce_ms(buckets) / allreduce_ms(whole).
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
ap.add_argument("--bucket-mb", type=float, default=25.0)
a = ap.parse_args()

setup = dist.setup_for_training(a.device)
rank, world = setup.rank, setup.world_size
bg.manual_seed(0)
model = models.mlp(a.features, 10, (a.hidden, a.hidden)).to(setup.device)
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
setup.prepare(model, opt, bucket_cap_mb=a.bucket_mb)
rng = np.random.default_rng(rank)
local = a.batch // world
x = bg.tensor(rng.random((local, a.features), dtype=np.float32), device=setup.device)
y = bg.tensor(rng.integers(0, 10, local), device=setup.device)
backend = x.backend
MODES = ("whole", "buckets")


def step(mode):
    """(step seconds, seconds inside the averaging) of one step."""
    t0 = time.perf_counter()
    opt.zero_grad()
    if mode == "whole" and setup.buckets is not None:
        with setup.no_sync():  # nothing starts during backward
            F.cross_entropy(model(x), y).backward()
        t = time.perf_counter()
        dist.all_reduce_gradients(opt)
    else:
        F.cross_entropy(model(x), y).backward()
        t = time.perf_counter()
        setup.after_backward(opt)
    backend.synchronize()
    t_ar = time.perf_counter() - t
    opt.step()
    backend.synchronize()
    return time.perf_counter() - t0, t_ar


for i in range(a.warmup * 2):
    step(MODES[i % 2])
times = np.zeros((2, a.steps, 2))
for i in range(2 * a.steps):
    setup.barrier()  # every rank starts each step together: the step times are comparable
    times[i % 2, i // 2] = step(MODES[i % 2])
if world > 1:
    from mpi4py import MPI

    dist.get_comm().Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)  # the slowest rank, step by step
res = {"world": world, "params": model.num_parameters(), "global_batch": a.batch, "device": str(backend.device),
       "buckets": len(setup.buckets.buckets) if setup.buckets else 0}
for m, mode in enumerate(MODES):
    res[f"{mode}_step_ms"] = 1e3 * float(np.median(times[m, :, 0]))
    res[f"{mode}_allreduce_ms"] = 1e3 * float(np.median(times[m, :, 1]))
res["step_ms"], res["allreduce_ms"] = res["buckets_step_ms"], res["buckets_allreduce_ms"]
if world > 1:
    res["hidden"] = 1 - res["buckets_allreduce_ms"] / res["whole_allreduce_ms"]
if setup.is_main:
    print(json.dumps(res))
