"""Data-parallel training over MPI (CPU) and NCCL (GPU).

Install the simplest MPI with ``pip install mpi4py mpich`` (the ``[dist]``
extra): no root and no system packages; it puts ``mpiexec`` beside your
Python. Then ``mpiexec -n 2 backprop-gpu train ...``.

* ``init()`` returns ``(rank, world_size)``; without ``mpiexec`` it is ``(0, 1)``
  and mpi4py is never imported.
* ``broadcast_parameters(model)`` copies rank 0's parameters everywhere, after
  checking every rank built the same model (a clear error otherwise).
* ``all_reduce_gradients(optimizer)`` averages gradients: one all-reduce per
  flat gradient buffer, i.e. one per step for a whole model. Host buffers go
  through MPI; GPU buffers through NCCL (``cupy.cuda.nccl``), with MPI used
  only to share the NCCL id. A collective that does not finish within
  ``timeout`` seconds (a rank died) aborts the job with a message instead of
  hanging.
* Each rank uses GPU ``rank % device_count``; the DataLoader's ``rank`` and
  ``world_size`` give each rank a disjoint share of every global batch.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

_LAUNCH_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_comm = None
_nccl = None
DEFAULT_TIMEOUT = float(os.environ.get("BACKPROP_GPU_DIST_TIMEOUT", "60"))


class DistributedError(RuntimeError):
    """Ranks disagree (different models) or one stopped answering."""


def launched_under_mpi() -> bool:
    """Whether this process was started by mpiexec (checked without importing MPI)."""
    for v in _LAUNCH_VARS:
        if v in os.environ:
            try:
                return int(os.environ[v]) > 1 if v != "PMIX_RANK" else True
            except ValueError:
                return True
    return False


def init() -> tuple[int, int]:
    """(rank, world size). Imports mpi4py only when launched under mpiexec."""
    global _comm
    if _comm is None and launched_under_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            raise DistributedError("launched under mpiexec but mpi4py is missing: pip install 'backprop_gpu[dist]'") \
                from None
        _comm = MPI.COMM_WORLD
    return get_rank(), get_world_size()


def is_initialized() -> bool:
    return _comm is not None


def get_rank() -> int:
    return _comm.Get_rank() if _comm is not None else 0


def get_world_size() -> int:
    return _comm.Get_size() if _comm is not None else 1


def barrier() -> None:
    if _comm is not None:
        _wait(_comm.Ibarrier(), "barrier", DEFAULT_TIMEOUT)


def _wait(request, what: str, timeout: float) -> None:
    """Poll a non-blocking collective; abort the whole job if it does not finish in time."""
    deadline = time.monotonic() + timeout
    while not request.Test():
        if time.monotonic() > deadline:
            msg = (f"backprop_gpu.distributed: rank {get_rank()} waited {timeout:.0f} s for {what}; another rank "
                   "has probably died. Aborting all ranks.")
            print(msg, file=sys.stderr, flush=True)
            _comm.Abort(3)
        time.sleep(1e-4)


def _signature(params) -> str:
    text = ";".join(f"{p.shape}:{p.dtype}" for p in params)
    return f"{len(params)} tensors, {sum(p.size for p in params)} values, {hashlib.sha1(text.encode()).hexdigest()[:12]}"


def check_same_model(params, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Raise :class:`DistributedError` on every rank if ranks hold differently shaped parameters."""
    if _comm is None:
        return
    mine = _signature(params)
    sigs = _comm.allgather(mine)
    if len(set(sigs)) > 1:
        detail = "; ".join(f"rank {r}: {s}" for r, s in enumerate(sigs))
        raise DistributedError(f"ranks built different models ({detail})")


def broadcast_parameters(module_or_params, root: int = 0, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Copy ``root``'s parameter values to every rank, in place (optimizer views survive)."""
    params = list(module_or_params.parameters()) if hasattr(module_or_params, "parameters") else list(module_or_params)
    check_same_model(params, timeout)
    if _comm is None:
        return
    for p in params:
        host = np.ascontiguousarray(p.numpy())
        _wait(_comm.Ibcast(host, root=root), "a parameter broadcast", timeout)
        p.array[...] = p.backend.asarray(host) if not p.backend.is_host else host
        p._version[0] += 1


def _nccl_comm(backend):
    global _nccl
    if _nccl is None:
        from cupy.cuda import nccl

        uid = nccl.get_unique_id() if get_rank() == 0 else None
        uid = _comm.bcast(uid, root=0)
        _nccl = nccl.NcclCommunicator(get_world_size(), uid, get_rank())
    return _nccl


def _all_reduce_mean(buf, backend, timeout):
    world = get_world_size()
    if backend.is_host:
        from mpi4py import MPI

        _wait(_comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM), "a gradient all-reduce", timeout)
    else:
        from cupy.cuda import nccl

        dtype = {np.dtype("float32"): nccl.NCCL_FLOAT32, np.dtype("float64"): nccl.NCCL_FLOAT64}[buf.dtype]
        stream = backend.xp.cuda.get_current_stream()
        _nccl_comm(backend).allReduce(buf.data.ptr, buf.data.ptr, buf.size, dtype, nccl.NCCL_SUM, stream.ptr)
    buf /= world


def all_reduce_gradients(optimizer_or_params, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Average gradients over ranks in place; returns the number of all-reduce calls made.

    Given an optimizer, that is one call per flat gradient buffer (one per step
    for a single-dtype model). Given loose parameters, one per gradient.
    """
    if _comm is None or get_world_size() == 1:
        return 0
    if hasattr(optimizer_or_params, "flat_groups"):
        bufs = [(f.grad, f.backend) for f in optimizer_or_params.flat_groups]
    else:
        bufs = [(p.grad.array, p.backend) for p in optimizer_or_params if p.grad is not None]
    for buf, backend in bufs:
        _all_reduce_mean(buf, backend, timeout)
    return len(bufs)


def device_for_rank(device: str) -> str:
    """On GPU, rank r uses ``cuda:(r % device_count)``; other devices are returned unchanged."""
    rank, world = get_rank(), get_world_size()
    if world == 1 or device not in ("auto", "cuda", "cupy"):
        return device
    from ..backends import cupy_unavailable_reason

    if device == "auto" and cupy_unavailable_reason() is not None:
        return device
    import cupy

    return f"cuda:{rank % cupy.cuda.runtime.getDeviceCount()}"


@dataclass
class TrainingSetup:
    """What the training CLI needs to run as one rank of many (or alone)."""

    rank: int
    world_size: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def prepare(self, model) -> None:
        """Check all ranks built the same model and start them from rank 0's parameters."""
        if self.world_size > 1:
            broadcast_parameters(model)

    def after_backward(self, optimizer) -> None:
        if self.world_size > 1:
            all_reduce_gradients(optimizer)


def setup_for_training(device: str = "auto") -> TrainingSetup:
    rank, world = init()
    return TrainingSetup(rank, world, device_for_rank(device))
