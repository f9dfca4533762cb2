"""Process group over MPI: rank and world size, a watchdog around every
collective, the same-model check, parameter broadcast and gradient averaging.

mpi4py is imported only when the process was started by ``mpiexec`` (or when
``init(force=True)`` is asked for), so single-process use never needs MPI.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import time

import numpy as np

#: environment variables a launcher sets: MPICH/Intel (hydra), Open MPI, PMIx, Slurm's PMI
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
#: exit code of a job that the watchdog aborted
ABORT_CODE = 17

_comm = None          # mpi4py.MPI.COMM_WORLD once initialised with more than one rank
_local = None         # (local_rank, local_size) once computed


class DistributedError(RuntimeError):
    """Ranks disagree (different models), or the set-up cannot work (e.g. NCCL missing)."""


def default_timeout() -> float:
    """Seconds a collective may wait for the other ranks before the job is aborted.

    ``BACKPROP_GPU_DIST_TIMEOUT`` (default 300). It must exceed the longest time
    one rank can legitimately spend away from the others: rank 0 evaluates and
    writes a checkpoint after each epoch while the others wait in the first
    all-reduce of the next one.
    """
    try:
        return float(os.environ.get("BACKPROP_GPU_DIST_TIMEOUT", "300"))
    except ValueError:
        raise DistributedError(f"BACKPROP_GPU_DIST_TIMEOUT must be a number of seconds, "
                               f"got {os.environ['BACKPROP_GPU_DIST_TIMEOUT']!r}") from None


def launched_under_mpi() -> bool:
    """Whether a launcher (mpiexec, srun) started this process as one of several ranks.

    Read from the environment, without importing MPI.
    """
    for v in _SIZE_VARS:
        if v in os.environ:
            try:
                return int(os.environ[v]) > 1
            except ValueError:
                return True
    return False


def init(force: bool = False) -> tuple[int, int]:
    """Join the job and return ``(rank, world_size)``; idempotent.

    Without ``mpiexec`` this is ``(0, 1)`` and mpi4py is not imported. Under
    ``mpiexec -n 1`` it is also ``(0, 1)`` without MPI. ``force=True`` imports
    mpi4py regardless (a singleton MPI process is a world of 1).
    """
    global _comm
    if _comm is None and (force or launched_under_mpi() or "mpi4py.MPI" in sys.modules):
        try:
            from mpi4py import MPI
        except ImportError:
            raise DistributedError("started by mpiexec but mpi4py is not installed: "
                                   "pip install mpi4py mpich (or 'backprop_gpu[dist]')") from None
        if MPI.COMM_WORLD.Get_size() > 1:
            _comm = MPI.COMM_WORLD
    return get_rank(), get_world_size()


def is_initialized() -> bool:
    """Whether this process is one rank of several (``init`` found an MPI world larger than 1)."""
    return _comm is not None


def get_rank() -> int:
    """This process's rank (0 without ``mpiexec``)."""
    return _comm.Get_rank() if _comm is not None else 0


def get_world_size() -> int:
    """The number of ranks (1 without ``mpiexec``)."""
    return _comm.Get_size() if _comm is not None else 1


def get_comm():
    """The mpi4py communicator (``None`` in a world of one)."""
    return _comm


# -- the watchdog ------------------------------------------------------------------
def abort(message: str, code: int = ABORT_CODE):
    """Print ``message`` (with this rank) to stderr and end every rank of the job (MPI_Abort)."""
    print(f"backprop_gpu.distributed: rank {get_rank()}: {message}", file=sys.stderr, flush=True)
    if _comm is not None:
        _comm.Abort(code)
    raise SystemExit(code)  # pragma: no cover - Abort does not return


def fail_all_ranks(message: str, code: int) -> int:
    """Report this rank's failure and, when it is one rank of several, end every rank of the job.

    Prints ``message`` (one line) to stderr, followed in a world of several ranks by
    ``(rank R of N; ending all ranks)``, and flushes stdout and stderr. Under
    ``mpiexec`` it then calls MPI_Abort with ``code``, so that the job exits with
    ``code`` within seconds: the other ranks would otherwise wait for this one in
    their next collective until the watchdog fires (:func:`default_timeout`,
    300 s by default). In a world of one it returns ``code``, to be returned or
    passed to ``sys.exit``.
    """
    if _comm is not None:
        message = f"{message} (rank {get_rank()} of {get_world_size()}; ending all ranks)"
    # one write, line and newline together: mpiexec merges the ranks' streams, and an unbuffered
    # print writes the newline separately, so another rank's output could land inside the line
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    if _comm is None:
        return code
    sys.stdout.flush()
    # MPI_Abort kills the job at once; give mpiexec a moment to forward what this rank just wrote
    time.sleep(0.2)
    _comm.Abort(code)
    raise SystemExit(code)  # pragma: no cover - Abort does not return


#: how long :func:`wait` polls without sleeping
SPIN_SECONDS = 0.25


def wait(requests, what: str, timeout: float | None = None, poll=None) -> None:
    """Complete non-blocking MPI requests, aborting the job after ``timeout`` seconds.

    A rank that died or stopped calling collectives leaves the others here;
    instead of hanging forever they print which collective timed out and call
    MPI_Abort, which ends every rank (mpiexec then exits non-zero).
    ``poll`` (optional) is called while waiting and may raise.
    """
    from mpi4py import MPI

    reqs = list(requests) if isinstance(requests, (list, tuple)) else [requests]
    if MPI.Request.Testall(reqs):
        return
    timeout = default_timeout() if timeout is None else timeout
    start = time.monotonic()
    deadline = start + timeout
    spin_until = start + SPIN_SECONDS
    tries, nap = 0, 0.0
    while not MPI.Request.Testall(reqs):
        tries += 1
        # spin first: a collective of a step takes microseconds to tens of milliseconds, and without
        # a progress thread it advances only inside MPI calls, the peer's copies waiting for ours;
        # a nap then would stall both ranks
        if nap or time.monotonic() > spin_until:
            nap = min(2e-3, max(2e-5, nap * 1.5))
            time.sleep(nap)
        if (tries & 63) == 0 or nap:
            if poll is not None:
                poll()
            if time.monotonic() > deadline:
                abort(f"waited {time.monotonic() - start:.1f} s for {what} (timeout {timeout:g} s); another rank "
                      f"has probably died, hung or left the training loop early. Aborting all "
                      f"{get_world_size()} ranks. (Set BACKPROP_GPU_DIST_TIMEOUT to change the limit.)")


def barrier(timeout: float | None = None) -> None:
    """Wait for every rank, aborting the job if one does not arrive within ``timeout`` seconds."""
    if _comm is not None:
        wait(_comm.Ibarrier(), "a barrier", timeout)


def _allgather_array(arr: np.ndarray, what: str, timeout) -> np.ndarray:
    """Every rank's copy of a fixed-shape array, stacked: shape ``(world, *arr.shape)``."""
    arr = np.ascontiguousarray(arr)
    out = np.empty((get_world_size(),) + arr.shape, arr.dtype)
    wait(_comm.Iallgather(arr, out), what, timeout)
    return out


def local_rank_and_size(timeout: float | None = None) -> tuple[int, int]:
    """This rank's index among the ranks on its host, and how many there are (for GPU choice)."""
    global _local
    if _comm is None:
        return 0, 1
    if _local is None:
        h = np.frombuffer(hashlib.sha1(socket.gethostname().encode()).digest()[:8], np.int64)
        hosts = _allgather_array(h, "the host-name exchange", timeout)[:, 0]
        mine = hosts[get_rank()]
        _local = (int((hosts[:get_rank()] == mine).sum()), int((hosts == mine).sum()))
    return _local


# -- same model everywhere ---------------------------------------------------------
def _named_tensors(module_or_params, buffers: bool = True) -> list[tuple[str, object]]:
    if hasattr(module_or_params, "named_parameters"):
        named = list(module_or_params.named_parameters())
        if buffers and hasattr(module_or_params, "named_buffers"):
            named += [(f"{k} (buffer)", b) for k, b in module_or_params.named_buffers()]
        return named
    return [(f"tensor {i}", p) for i, p in enumerate(module_or_params)]


def _describe(t) -> str:
    return f"{tuple(t.shape)} {t.dtype}"


def check_same_model(module_or_params, timeout: float | None = None) -> None:
    """Raise :class:`DistributedError` on every rank if the ranks hold differently shaped tensors.

    Compares the number of tensors, of values, and a hash of every shape and
    dtype (one non-blocking all-gather under the watchdog); on a mismatch the
    message names the first tensor that differs and its shape on each rank.
    """
    if _comm is None:
        return
    named = _named_tensors(module_or_params)
    text = ";".join(f"{_describe(t)}" for _, t in named).encode()
    digest = np.frombuffer(hashlib.sha256(text).digest()[:16], np.int64)
    mine = np.array([len(named), sum(t.numel() for _, t in named), *digest], np.int64)
    allsigs = _allgather_array(mine, "the model check (every rank must call broadcast_parameters)", timeout)
    if (allsigs == allsigs[0]).all():
        return
    # Everyone is here and alive: exchange the full descriptions for a precise message.
    desc = _comm.allgather([(k, _describe(t)) for k, t in named])
    counts = "; ".join(f"rank {r}: {int(s[0])} tensors, {int(s[1])} values" for r, s in enumerate(allsigs))
    first = ""
    for i in range(max(len(d) for d in desc)):
        row = [d[i] if i < len(d) else None for d in desc]
        if len(set(row)) > 1:
            first = "; first difference: " + ", ".join(
                f"rank {r} has {'nothing' if e is None else f'{e[0]} {e[1]}'}" for r, e in enumerate(row))
            break
    raise DistributedError(f"ranks built different models ({counts}){first}")


def _config_differences(configs: list[dict]) -> list[str]:
    """``'name A (rank 0) vs B (rank 1)'`` for every entry on which the ranks' ``configs`` disagree."""
    missing = object()
    names = list(dict.fromkeys(k for c in configs for k in c))  # rank 0's order first
    diffs = []
    for name in names:
        groups: dict[str, list[int]] = {}  # the value's repr -> the ranks that have it
        for r, c in enumerate(configs):
            v = c.get(name, missing)
            groups.setdefault("(not set)" if v is missing else repr(v), []).append(r)
        if len(groups) > 1:
            diffs.append(f"{name} " + " vs ".join(
                f"{v} (rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))})" for v, rs in groups.items()))
    return diffs


def check_same_config(config: dict, timeout: float | None = None) -> None:
    """Raise :class:`DistributedError` on every rank unless every rank passes an equal ``config``.

    ``config`` maps names to plain values (numbers, strings, booleans, None,
    tuples): the settings of a run that every rank must share, such as its
    learning rate, optimizer and seed. Ranks started with different values would
    otherwise train silently different models, or one would stop early and leave
    the others waiting. One non-blocking all-gather of a hash under the watchdog;
    on a mismatch the message names every entry that differs and its value on
    each rank, e.g. ``lr 0.1 (rank 0) vs 0.2 (rank 1)``. A no-op in a world of one.
    """
    if _comm is None:
        return
    items = sorted(config.items())
    digest = np.frombuffer(hashlib.sha256(repr(items).encode()).digest()[:16], np.int64)
    allsigs = _allgather_array(digest, "the run-configuration check (every rank must call it)", timeout)
    if (allsigs == allsigs[0]).all():
        return
    # Everyone is here and alive: exchange the settings themselves for a precise message.
    configs = _comm.allgather(dict(items))
    diffs = _config_differences(configs) or ["(the values differ only in type)"]
    raise DistributedError("the ranks were started with different settings (every rank must run the same "
                           "configuration): " + "; ".join(diffs))


def broadcast_parameters(module_or_params, root: int = 0, timeout: float | None = None,
                         buffers: bool = True) -> None:
    """Copy ``root``'s parameter values (and a module's buffers) to every rank, in place.

    First checks that every rank built the same model (:func:`check_same_model`).
    The values travel as one byte buffer in one broadcast; they are written into
    the existing arrays, so an optimizer's flat buffers (whose views the
    parameters are) see them. Call it after building the model on every rank,
    before the first step (building the optimizer before or after is fine).
    """
    check_same_model(module_or_params if buffers else list(_tensors(module_or_params)), timeout)
    if _comm is None:
        return
    tensors = [t for _, t in _named_tensors(module_or_params, buffers)]
    hosts = [np.ascontiguousarray(t.numpy()) for t in tensors] if get_rank() == root else \
        [np.empty(t.shape, t.dtype) for t in tensors]
    sizes = [h.nbytes for h in hosts]
    blob = np.empty(sum(sizes), np.uint8)
    offsets = np.cumsum([0] + sizes)
    if get_rank() == root:
        for h, lo, hi in zip(hosts, offsets[:-1], offsets[1:]):
            blob[lo:hi] = h.reshape(-1).view(np.uint8)
    wait(_comm.Ibcast(blob, root=root), "the parameter broadcast", timeout)
    if get_rank() == root:
        return
    for t, h, lo, hi in zip(tensors, hosts, offsets[:-1], offsets[1:]):
        vals = blob[lo:hi].view(h.dtype).reshape(h.shape)
        t.array[...] = vals if t.backend.is_host else t.backend.asarray(vals)
        t._version[0] += 1


def _tensors(module_or_params):
    return module_or_params.parameters() if hasattr(module_or_params, "parameters") else module_or_params


# -- gradients -------------------------------------------------------------------------
def zero_missing_grads(params) -> None:
    """Give each flat-buffer parameter without a gradient a zero one in its slot: a parameter unused on
    this rank takes part with zeros (its slot may still hold the previous step's values) and then has
    the average, so every rank steps it alike."""
    for p in params:
        if p.grad is None:
            slot = p._grad_slot
            slot.array.fill(0)
            p.grad = slot


def _grad_buffers(optimizer_or_params):
    """[(contiguous 1-D-able array, backend)] to average, in an order every rank agrees on."""
    if hasattr(optimizer_or_params, "flat_groups"):
        flats = optimizer_or_params.flat_groups
        for f in flats:
            zero_missing_grads(f.params)
        return [(f.grad, f.backend) for f in flats]
    if hasattr(optimizer_or_params, "param_groups"):
        params = [p for g in optimizer_or_params.param_groups for p in g["params"]]
    else:
        params = list(_tensors(optimizer_or_params))
    from ..tape.tensor import Tensor

    out = []
    for p in params:
        if not getattr(p, "requires_grad", True):
            continue
        if p.grad is None:  # a parameter unused on this rank still takes part, with a zero gradient
            p.grad = Tensor._make(p.backend.xp.zeros_like(p.array), p.backend)
        g = p.grad.array
        if not g.flags.c_contiguous:
            p.grad = Tensor._make(p.backend.xp.ascontiguousarray(g), p.backend)
            g = p.grad.array
        out.append((g, p.backend))
    return out


def all_reduce_gradients(optimizer_or_params, weight: float | None = None, timeout: float | None = None) -> int:
    """Average gradients over the ranks, in place; returns the number of all-reduces made.

    ``optimizer_or_params`` is an optimizer with flat buffers (``flat_groups``):
    one all-reduce per flat gradient buffer, i.e. one per step for a model of
    one device and dtype. Otherwise (an optimizer without flat buffers, a
    Module, or a list of parameters) one all-reduce per gradient; a parameter
    without a gradient contributes zeros, so every rank makes the same calls.

    ``weight`` is this rank's share of the global batch (local samples /
    global samples; see :class:`ShardedLoader`). With it the result is the
    gradient of the mean loss over the global batch even when the shards are
    unequal; without it every rank counts equally (exact when they are equal).

    Host buffers go through ``MPI_Iallreduce(MPI_IN_PLACE, ...)``, GPU buffers
    through NCCL, queued on the compute stream and averaged by NCCL itself
    (:func:`~backprop_gpu.distributed.nccl.all_reduce_mean`: the host does not
    wait for it); both under the watchdog (``timeout`` seconds, see :func:`wait`).
    """
    if _comm is None:
        return 0
    from mpi4py import MPI

    world = get_world_size()
    bufs = _grad_buffers(optimizer_or_params)
    host = [b for b, be in bufs if be.is_host]
    gpu = [(b, be) for b, be in bufs if not be.is_host]
    if host:
        if weight is not None:
            for b in host:
                b *= weight
        reqs = [_comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM) for b in host]
        wait(reqs, f"the gradient all-reduce ({sum(b.size for b in host)} values)", timeout)
        if weight is None:
            for b in host:
                b /= world
    if gpu:
        from .nccl import all_reduce_mean

        all_reduce_mean(gpu, weight, timeout)  # queued on the stream: the host does not wait
    return len(bufs)
