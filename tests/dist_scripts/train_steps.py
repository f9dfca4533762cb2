"""Run K data-parallel steps of a small MLP and save rank 0's parameters. Used by tests/test_distributed.py.

usage: python train_steps.py OUT.npz STEPS [--n N] [--batch B] [--optim sgd|adam]
                             [--mode setup|whole|flat|tensors|unweighted] [--bucket-mb MB]
                             [--timeout S] [--device D]
                             [--backward-twice] [--unused-on-rank R] [--mismatch] [--die-rank R] [--stall-rank R] [--quit-rank R]

Modes: ``setup`` goes through setup_for_training / wrap_loader / after_backward
(what the CLI does: buckets all-reduced during backward, ``--bucket-mb`` each);
``whole`` the same without the optimizer given to prepare (one all-reduce after backward); ``flat`` calls all_reduce_gradients(optimizer, weight=...);
``tensors`` passes the parameter list (one all-reduce per tensor);
``unweighted`` averages every rank equally.
"""
import argparse
import os
import sys
import time

import numpy as np

import backprop_gpu as bg
from backprop_gpu import distributed as dist
from backprop_gpu import optim
from backprop_gpu.app import models
from backprop_gpu.app.data import ArrayDataset
from backprop_gpu.utils.data import DataLoader
from backprop_gpu.nn import functional as F

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("steps", type=int)
ap.add_argument("--n", type=int, default=61)  # 61 = 3 x 16 + 13: the last global batch splits 7 / 6
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--optim", default="sgd")
ap.add_argument("--mode", default="setup")
ap.add_argument("--bucket-mb", type=float, default=25.0)
ap.add_argument("--backward-twice", action="store_true")
ap.add_argument("--timeout", type=float, default=None)
ap.add_argument("--device", default="cpu")
ap.add_argument("--mismatch", action="store_true")
ap.add_argument("--die-rank", type=int, default=None)
ap.add_argument("--stall-rank", type=int, default=None)
ap.add_argument("--quit-rank", type=int, default=None)
ap.add_argument("--unused-on-rank", type=int, default=None)
a = ap.parse_args()

setup = dist.setup_for_training(a.device, timeout=a.timeout)
rank, world = setup.rank, setup.world_size
hidden = (16 + rank,) if a.mismatch else (16,)

bg.manual_seed(rank + 100)  # different local inits: the broadcast must make them equal
rng = np.random.default_rng(0)
data = ArrayDataset(rng.random((a.n, 10)).astype(np.float32), rng.integers(0, 3, a.n), "toy")
model = models.mlp(10, 3, hidden).to(setup.device)
if a.unused_on_rank is not None:  # a last layer that one rank's loss leaves out: no gradient there
    model = bg.nn.Sequential(*model, bg.nn.Linear(3, 3)).to(setup.device)
opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if a.optim == "sgd" else \
    optim.Adam(model.parameters(), lr=1e-2)
try:
    if a.mode == "setup":
        setup.prepare(model, opt, bucket_cap_mb=a.bucket_mb)
    else:
        setup.prepare(model)
except dist.DistributedError as e:
    print(f"rank {rank}: {e}", flush=True)
    sys.exit(4)
loader = DataLoader(data, a.batch, shuffle=True, seed=7, device=setup.device, rank=rank, world_size=world)
if a.mode != "unweighted":
    loader = setup.wrap_loader(loader)
done, calls = 0, 0
while done < a.steps:
    for x, y in loader:
        if done == 1 and rank == a.die_rank:
            os._exit(9)  # crashes without a word
        if done == 1 and rank == a.stall_rank:
            time.sleep(3600)  # hangs
        if done == 1 and rank == a.quit_rank:
            sys.exit(0)  # leaves the loop early, cleanly
        opt.zero_grad()
        out = model[:-1](x) if rank == a.unused_on_rank else model(x)
        F.cross_entropy(out, y).backward()
        if a.backward_twice:
            try:
                F.cross_entropy(model(x), y).backward()
            except dist.DistributedError as e:
                print(f"rank {rank}: {e}", flush=True)
                sys.exit(5)
        if a.mode in ("setup", "whole"):
            setup.after_backward(opt)
            calls += 1 if world > 1 else 0
        elif a.mode == "flat":
            calls += dist.all_reduce_gradients(opt, weight=getattr(loader, "weight", None), timeout=a.timeout)
        elif a.mode == "tensors":
            calls += dist.all_reduce_gradients(list(model.parameters()), weight=getattr(loader, "weight", None),
                                               timeout=a.timeout)
        else:
            calls += dist.all_reduce_gradients(opt, timeout=a.timeout)
        opt.step()
        done += 1
        if done == a.steps:
            break
if world > 1:  # every rank holds the same parameters (checked here, since only rank 0 saves them)
    mine = np.concatenate([p.numpy().ravel() for p in model.parameters()]).astype(np.float64)
    first = dist.get_comm().bcast(mine, root=0)
    if not np.array_equal(first, mine):
        print(f"rank {rank}: parameters differ from rank 0's by up to {np.abs(first - mine).max()}", flush=True)
        sys.exit(6)
if setup.is_main:
    b = setup.buckets
    np.savez(a.out, calls=calls, world=world, buckets=len(b.buckets) if b else 0, early=b.started_early if b else 0,
             **{k: v.numpy() for k, v in model.state_dict().items()})
