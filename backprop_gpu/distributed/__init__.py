"""Data-parallel training over MPI (CPU) and NCCL (GPU).

Install
-------
The simplest MPI needs no root and no system packages::

    pip install mpi4py mpich          # or: pip install 'backprop_gpu[dist]'

The ``mpich`` wheel puts ``mpiexec`` beside your Python (in the same ``bin``
directory as ``python``; use that one, not another MPI's). Then::

    mpiexec -n 2 backprop-gpu train --dataset digits --batch-size 64

trains on 2 processes with a global batch of 64 (32 per rank). Rank 0 alone
prints progress and writes metrics, plots and checkpoints. On GPUs, each rank
uses GPU ``rank % device_count`` (one rank per GPU) and gradients are averaged
with NCCL (``pip install nvidia-nccl-cu13``, or ``-cu12``, if CuPy reports no
NCCL; without it they go through host memory over MPI). Without ``mpiexec``
everything here is a no-op for a world of one and mpi4py is never imported.

What it does
------------
* :func:`init` returns ``(rank, world_size)``; :func:`is_initialized`,
  :func:`get_rank`, :func:`get_world_size`, :func:`barrier`.
* :func:`check_same_config` checks that every rank runs with the same
  settings (learning rate, optimizer, seed, ...: a dict; a
  :class:`DistributedError` naming each differing entry and its value on every
  rank otherwise); ``TrainingSetup.prepare(model, config=...)`` runs it first.
* :func:`broadcast_parameters` checks that every rank built the same model
  (tensor count, sizes and a hash of shapes and dtypes, all-gathered; a clear
  :class:`DistributedError` on every rank otherwise) and copies rank 0's
  parameters and buffers everywhere, in one broadcast.
* Gradients are averaged while backward runs: ``setup.prepare(model, optimizer)``
  cuts the optimizer's flat gradient buffers into buckets (views, last layers
  first, 1 MB then ``bucket_cap_mb``), and each bucket's all-reduce starts as
  soon as its gradients are final (:mod:`.buckets`); ``after_backward`` waits
  only for what is still in flight. ``with setup.no_sync():`` around all but the
  last backward accumulates gradients over several. :func:`all_reduce_gradients`
  averages after ``backward()`` instead: one in-place all-reduce per flat
  gradient buffer (``optimizer.flat_groups``), i.e. one per step for a whole
  model; loose parameters fall back to one per tensor. On GPUs NCCL averages in
  the all-reduce itself, queued on the compute stream: the host never waits for
  it (:mod:`.nccl`).
* Data: ``batch_size`` is the *global* batch. :func:`shard_indices`, the
  DataLoader's ``rank``/``world_size`` and :class:`ShardedLoader` give each
  rank a disjoint ``batch_size / world_size`` share of every global batch
  (see :mod:`backprop_gpu.distributed.sampler`), so ``N`` ranks take the same
  steps as one process with the same seed, to float rounding.
* Failures do not hang: every collective is non-blocking and polled against
  a deadline (``BACKPROP_GPU_DIST_TIMEOUT`` seconds, default 300). A rank that
  died, hung or left early makes the others print what they were waiting for
  and end the job with MPI_Abort. (A rank that crashes is usually reported at
  once by ``mpiexec`` itself, which then stops the others.) A rank that fails
  with a handled error calls :func:`fail_all_ranks`, which prints its message
  and ends every rank at once (``backprop-gpu`` does, with exit code 2).
* Checkpoints: the model and optimizer state are identical on every rank and
  rank 0 writes them whole, and the data order depends on the seed only, so a
  checkpoint resumes with any number of ranks.

``ABORT_CODE`` is the exit code of a job the watchdog ended with MPI_Abort.

Caveats: BatchNorm statistics are per rank (rank 0's are saved, as with
PyTorch's DDP default); Dropout masks are drawn per rank.

A training loop::

    setup = distributed.setup_for_training("auto")
    model = build_model().to(setup.device)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loader = setup.wrap_loader(DataLoader(data, 64, shuffle=True, seed=0, device=setup.device,
                                          rank=setup.rank, world_size=setup.world_size))
    setup.prepare(model, opt)                 # same model everywhere, rank 0's values
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()       # buckets are averaged as they complete
        setup.after_backward(opt)             # waits for the last ones
        opt.step()
    if setup.is_main:
        save_checkpoint(...)
"""
from __future__ import annotations

from .comm import (ABORT_CODE, DistributedError, abort, all_reduce_gradients, barrier, broadcast_parameters,
                   check_same_config, check_same_model, default_timeout, fail_all_ranks, get_comm, get_rank,
                   get_world_size, init, is_initialized, launched_under_mpi, local_rank_and_size, wait)
from .sampler import DistributedSampler, ShardedLoader, global_batch_sizes, shard_indices
from .training import TrainingSetup, device_for_rank, limit_threads, setup_for_training

__all__ = ["ABORT_CODE", "DistributedError", "DistributedSampler", "ShardedLoader", "TrainingSetup", "abort",
           "all_reduce_gradients", "barrier", "broadcast_parameters", "check_same_config", "check_same_model",
           "default_timeout", "device_for_rank", "fail_all_ranks", "get_comm", "get_rank", "get_world_size",
           "global_batch_sizes", "init", "is_initialized", "launched_under_mpi", "limit_threads",
           "local_rank_and_size", "setup_for_training", "shard_indices", "wait"]
