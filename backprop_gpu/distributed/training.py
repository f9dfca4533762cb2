"""What a training script (``backprop-gpu train``) calls to run as one rank of many, or alone."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import comm as _c
from .buckets import FIRST_BUCKET_MB, GradientBuckets
from .sampler import ShardedLoader


def device_for_rank(device: str = "auto") -> str:
    """The device this rank should use.

    On a GPU (``auto`` with a GPU present, ``cuda``, ``cupy`` or ``numba-cuda``
    without an index) rank ``r`` takes GPU ``local_rank % device_count``, which
    is ``r % device_count`` on one machine. An explicit index (``cuda:1``), the
    CPU, and a world of one are returned unchanged.
    """
    if _c.get_world_size() == 1 or not isinstance(device, str):
        return device
    d = device.strip().lower()
    if d not in ("auto", "cuda", "gpu", "cupy", "numba-cuda"):
        return device
    from ..array.modules import cupy_unavailable_reason

    if cupy_unavailable_reason() is not None:
        return device  # auto falls back to the CPU; an explicit GPU request reports what is missing later
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    index = _c.local_rank_and_size()[0] % count
    kind = "numba-cuda" if d == "numba-cuda" else "cuda"
    return f"{kind}:{index}"


def limit_threads(local_size: int) -> int:
    """Share the CPU cores among the ranks on this machine (Numba and BLAS threads); returns threads per rank.

    Several ranks each running one thread per core would oversubscribe the
    cores. Skipped when the user set ``NUMBA_NUM_THREADS`` or ``OMP_NUM_THREADS``.
    """
    if local_size <= 1 or "NUMBA_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    n = max(1, cores // local_size)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # stays in effect for the process
    except Exception:
        pass
    return n


@dataclass
class TrainingSetup:
    """One rank's view of a data-parallel run (a world of one when not under ``mpiexec``)."""

    rank: int
    world_size: int
    device: str
    local_rank: int = 0
    timeout: float | None = None
    loader: ShardedLoader | None = field(default=None, repr=False)
    buckets: GradientBuckets | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints progress and writes metrics, plots and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    def prepare(self, model, optimizer=None, config: dict | None = None, bucket_cap_mb: float = 25.0) -> None:
        """Check every rank built the same model, then start them all from rank 0's parameters and buffers.

        Call once after building (or resuming) the model, before the first
        step. ``config`` (optional): the run's settings that every rank must
        share, as a dict of plain values (e.g. lr, optimizer, seed), compared
        first (:func:`~backprop_gpu.distributed.check_same_config`). A mismatch
        of either raises :class:`DistributedError` on every rank. On GPU with
        NCCL, also creates the NCCL communicator now, while all ranks are known
        to be here.

        With ``optimizer`` (one with flat buffers, as every optimizer here), gradients are
        averaged while backward runs: its flat gradient buffers are cut into buckets, each
        all-reduced as soon as its gradients are final (:mod:`.buckets`), and
        :meth:`after_backward` waits only for what is still in flight. Without it they are
        averaged whole in :meth:`after_backward`. ``bucket_cap_mb``: the buckets' size (the first
        is at most 1 MB), as DDP's argument of that name.
        """
        if not self.distributed:
            return
        if config is not None:
            _c.check_same_config(config, timeout=self.timeout)
        _c.broadcast_parameters(model, timeout=self.timeout)
        params = list(model.parameters()) if hasattr(model, "parameters") else list(model)
        gpus = sorted({p.backend.device.index or 0 for p in params if not p.backend.is_host})
        if gpus:
            from .nccl import communicator, use_nccl

            if use_nccl(self.timeout):
                for idx in gpus:
                    communicator(idx, self.timeout)
        if optimizer is not None and hasattr(optimizer, "flat_groups"):
            if self.buckets is not None:
                self.buckets.remove()
            self.buckets = GradientBuckets(optimizer, weight=self._weight, timeout=self.timeout,
                                           bucket_cap_mb=bucket_cap_mb,
                                           first_bucket_mb=min(bucket_cap_mb, FIRST_BUCKET_MB))

    def _weight(self):
        return self.loader.weight if self.loader is not None else None

    def wrap_loader(self, loader):
        """``loader`` (built with ``rank=setup.rank, world_size=setup.world_size``) wrapped in a
        :class:`ShardedLoader`, so :meth:`after_backward` weights each rank by its share of the
        global batch (exact equivalence with one process in an unevenly split last batch).
        Returns ``loader`` unchanged in a world of one."""
        if not self.distributed:
            return loader
        self.loader = loader if isinstance(loader, ShardedLoader) else ShardedLoader(loader, self.rank,
                                                                                    self.world_size)
        return self.loader

    def after_backward(self, optimizer) -> None:
        """Average the gradients over the ranks (call between ``loss.backward()`` and ``optimizer.step()``)."""
        if not self.distributed:
            return
        if self.buckets is not None and self.buckets.optimizer is optimizer:
            self.buckets.finish()
        else:
            _c.all_reduce_gradients(optimizer, weight=self._weight(), timeout=self.timeout)

    def no_sync(self):
        """A context in which backward only accumulates gradients locally, for gradient
        accumulation over several backward calls before one :meth:`after_backward` (as
        ``DistributedDataParallel.no_sync``). Outside ``mpiexec``, or without an optimizer given to
        :meth:`prepare`, nothing starts during backward anyway, and it changes nothing."""
        import contextlib

        return self.buckets.no_sync() if self.buckets is not None else contextlib.nullcontext()

    def barrier(self) -> None:
        """Wait until every rank gets here (within the setup's timeout)."""
        _c.barrier(self.timeout)

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs)


def setup_for_training(device: str = "auto", timeout: float | None = None,
                       share_cores: bool = True) -> TrainingSetup:
    """Join the job (if started by ``mpiexec``) and pick this rank's device.

    Returns a :class:`TrainingSetup`: ``rank``, ``world_size``, ``device`` (the
    device string to build the model on: ``cuda:<local rank % GPUs>`` on GPU
    machines), ``is_main``, and the hooks :meth:`~TrainingSetup.prepare`,
    :meth:`~TrainingSetup.wrap_loader` and :meth:`~TrainingSetup.after_backward`.
    With ``share_cores`` the ranks on one machine split its cores between them.
    ``timeout`` (seconds; default ``BACKPROP_GPU_DIST_TIMEOUT`` or 300) bounds
    every wait for the other ranks.
    """
    rank, world = _c.init()
    local_rank = 0
    if world > 1:
        local_rank, local_size = _c.local_rank_and_size(timeout)
        if share_cores:
            limit_threads(local_size)
    return TrainingSetup(rank, world, device_for_rank(device), local_rank, timeout)
