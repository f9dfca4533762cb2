"""GPU gradient averaging: NCCL through ``cupy.cuda.nccl``, MPI only to share NCCL's id.

Imported lazily, the first time a GPU buffer is all-reduced (or by
:func:`communicator` when training starts), so CPU-only installs never load
CuPy. Each rank drives one GPU (``local_rank % device_count``, i.e.
``rank % device_count`` on one machine); NCCL refuses two ranks of one
communicator on the same GPU, so run at most one rank per GPU.

Without an NCCL library (``cupy.cuda.nccl.available`` is False; install it
with ``pip install nvidia-nccl-cu13``), with more ranks on a machine than
GPUs, or with ``BACKPROP_GPU_GPU_COMM=host``, GPU buffers are copied to the
host and averaged over MPI instead: slower, same result. All ranks agree on
the choice (a vote at the first GPU all-reduce).
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np

from . import comm as _c

_groups: dict[int, "NcclGroup"] = {}
_decided: tuple[bool, str | None] | None = None  # (use NCCL, why not), agreed by every rank


def _nccl():
    from cupy.cuda import nccl

    return nccl


def nccl_unavailable_reason() -> str | None:
    """``None`` if NCCL can be used, else why not."""
    if os.environ.get("BACKPROP_GPU_GPU_COMM", "nccl").lower() == "host":
        return "BACKPROP_GPU_GPU_COMM=host"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nccl = _nccl()
    except Exception as e:  # no CuPy, or a broken one
        return f"cupy.cuda.nccl cannot be imported: {e}"
    if not getattr(nccl, "available", True) or not hasattr(nccl, "NcclCommunicator"):
        return "CuPy found no NCCL library (pip install nvidia-nccl-cu13, or nvidia-nccl-cu12 for CUDA 12)"
    if _c._local is not None:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if _c._local[1] > count:
            return f"{_c._local[1]} ranks on this machine share {count} GPU(s), and NCCL needs one GPU per rank"
    return None


def use_nccl(timeout: float | None = None) -> bool:
    """Whether GPU buffers go through NCCL; decided once, by all ranks together (collective)."""
    global _decided
    if _decided is None:
        why = nccl_unavailable_reason()
        votes = _c._allgather_array(np.array([why is None], np.int8), "the NCCL availability vote", timeout)
        if why is None and not votes.all():
            why = "another rank cannot use NCCL"
        _decided = (why is None, why)
        if why is not None and _c.get_rank() == 0 and why != "BACKPROP_GPU_GPU_COMM=host":
            warnings.warn(f"averaging GPU gradients through host memory over MPI: {why}", RuntimeWarning)
    return _decided[0]


def _dtype_code(dtype):
    nccl = _nccl()
    codes = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
             np.dtype(np.float64): nccl.NCCL_FLOAT64}
    try:
        return codes[np.dtype(dtype)]
    except KeyError:
        raise _c.DistributedError(f"cannot all-reduce gradients of dtype {dtype} with NCCL") from None


class NcclGroup:
    """One NCCL communicator on one GPU: ``world`` ranks, this one ``rank``, joined by ``unique_id``.

    ``NcclGroup(1, 0, nccl.get_unique_id(), 0)`` is a valid one-GPU group
    (used by the GPU smoke test).
    """

    def __init__(self, world: int, rank: int, unique_id: tuple, device_index: int):
        import cupy

        nccl = _nccl()
        self.device_index = device_index
        self.world, self.rank = world, rank
        with cupy.cuda.Device(device_index):
            try:
                self.comm = nccl.NcclCommunicator(world, tuple(unique_id), rank)
            except nccl.NcclError as e:
                raise _c.DistributedError(
                    f"NCCL could not set up {world} ranks (this one on GPU {device_index}): {e}. NCCL needs one "
                    "GPU per rank: start at most as many ranks per machine as it has GPUs, or set "
                    "BACKPROP_GPU_GPU_COMM=host to average over MPI through host memory") from None

    def all_reduce(self, bufs, timeout: float | None = None, average: bool = False) -> None:
        """Sum (or, with ``average``, average) each CuPy array in ``bufs`` over the group, in place.

        The collectives are queued on the current stream inside one NCCL group, so the kernels
        queued after them (the optimizer step) wait for them on the device, and the host goes on
        without waiting. The watchdog runs at the next call: if the previous all-reduce has not
        finished by then, the host waits for it (polling NCCL's asynchronous errors) up to
        ``timeout`` seconds, then aborts the communicator and the whole job (MPI_Abort). So the
        host runs at most one step ahead of the device, and never stops for a healthy all-reduce.
        :meth:`synchronize` waits for the last one.
        """
        import cupy

        nccl = _nccl()
        op = nccl.NCCL_SUM
        if average:
            op = _avg_op()
        with cupy.cuda.Device(self.device_index):
            self.synchronize(timeout)
            stream = cupy.cuda.get_current_stream()
            nccl.groupStart()
            try:
                for b in bufs:
                    if not b.flags.c_contiguous:
                        raise ValueError("NCCL all-reduce needs contiguous buffers")
                    self.comm.allReduce(b.data.ptr, b.data.ptr, b.size, _dtype_code(b.dtype), op, stream.ptr)
            finally:
                nccl.groupEnd()
            done = cupy.cuda.Event(block=False, disable_timing=True)
            done.record(stream)
            self._pending = (done, sum(b.size for b in bufs))
        if average and op == nccl.NCCL_SUM:  # an NCCL older than 2.10 has no average: one more pass
            for b in bufs:
                b /= self.world

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait, under the watchdog, for the last all-reduce queued (also called before queueing the next)."""
        pending = getattr(self, "_pending", None)
        if pending is not None:
            event, n = pending
            if not event.done:
                self._wait(event, timeout, n)
            self._pending = None

    def _wait(self, event, timeout, n) -> None:
        timeout = _c.default_timeout() if timeout is None else timeout
        start = time.monotonic()
        tries, nap = 0, 0.0
        while not event.done:
            tries += 1
            if tries > 200:
                nap = min(2e-3, max(2e-5, nap * 1.5))
                time.sleep(nap)
                try:
                    self.comm.check_async_error()
                except Exception as e:  # a peer failed: NCCL reports it here
                    self._abort(f"NCCL reported an error during the gradient all-reduce: {e}")
                if time.monotonic() - start > timeout:
                    self._abort(f"waited {time.monotonic() - start:.1f} s for the NCCL gradient all-reduce "
                                f"({n} values, timeout {timeout:g} s); another rank has probably died or hung. "
                                f"Aborting all ranks. (Set BACKPROP_GPU_DIST_TIMEOUT to change the limit.)")

    def _abort(self, message: str):
        try:
            self.comm.abort()
        finally:
            _c.abort(message)

    def destroy(self) -> None:
        self.comm.destroy()


def _avg_op() -> int:
    """NCCL's ``ncclAvg`` where the library has it (2.10 and newer; CuPy's enum lacks the name),
    else ``NCCL_SUM`` (the caller then divides)."""
    nccl = _nccl()
    avg = getattr(nccl, "NCCL_AVG", 4)
    try:
        return avg if nccl.get_version() >= 21000 else nccl.NCCL_SUM
    except Exception:
        return nccl.NCCL_SUM


def communicator(device_index: int, timeout: float | None = None) -> NcclGroup:
    """This rank's NCCL group on GPU ``device_index``, created on first use (collective: all ranks call it)."""
    g = _groups.get(device_index)
    if g is None:
        nccl = _nccl()
        uid = np.zeros(128, np.int16)  # NCCL_UNIQUE_ID_BYTES C chars, signed or not: int16 keeps them exactly
        if _c.get_rank() == 0:
            uid[:] = nccl.get_unique_id()
        _c.wait(_c.get_comm().Ibcast(uid, root=0), "the NCCL id broadcast", timeout)
        _c.barrier(timeout)  # every rank is alive and about to join: NCCL's own set-up has no timeout
        g = _groups[device_index] = NcclGroup(_c.get_world_size(), _c.get_rank(),
                                               tuple(int(v) for v in uid), device_index)
    return g


def _host_all_reduce(bufs, timeout, scale: float | None = None) -> None:
    """The fallback: through host memory and MPI (each host copy scaled by ``scale`` first)."""
    from mpi4py import MPI

    import cupy

    hosts = [cupy.asnumpy(b) for b in bufs]
    if scale is not None and scale != 1.0:
        for h in hosts:
            h *= scale
    reqs = [_c.get_comm().Iallreduce(MPI.IN_PLACE, h, op=MPI.SUM) for h in hosts]
    _c.wait(reqs, f"the gradient all-reduce ({sum(h.size for h in hosts)} values, staged on the host)", timeout)
    for b, h in zip(bufs, hosts):
        b.set(h)


def all_reduce_mean(bufs_and_backends, weight: float | None = None, timeout: float | None = None) -> None:
    """Average GPU gradient buffers over the ranks in place, each rank weighted by ``weight``
    (its share of the global batch; ``None``: all alike), without waiting on the host.

    With equal weights NCCL averages in the all-reduce itself (``ncclAvg``), so the gradients
    get no pass besides it; unequal weights (an unevenly split last batch) cost one scaling pass
    before it.
    """
    world = _c.get_world_size()
    equal = weight is None or abs(weight * world - 1.0) < 1e-12
    if not use_nccl(timeout):
        _host_all_reduce([b for b, _ in bufs_and_backends], timeout, 1.0 / world if equal else weight)
        return
    by_device: dict[int, list] = {}
    for b, be in bufs_and_backends:
        by_device.setdefault(be.device.index or 0, []).append(b)
    for idx in sorted(by_device):
        bufs = by_device[idx]
        if not equal:
            for b in bufs:
                b *= weight * world  # then averaged: sum of weight * g over the ranks
        communicator(idx, timeout).all_reduce(bufs, timeout, average=True)
