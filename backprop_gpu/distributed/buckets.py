"""Gradient averaging that overlaps backward: buckets of the flat gradient buffers, each
all-reduced as soon as its gradients are final.

The flat gradient buffer of each optimizer group (:class:`~backprop_gpu.optim.flat.FlatGroup`)
is cut into contiguous buckets in reverse registration order (the order backward produces
gradients), as views: no copies, as PyTorch DDP's ``gradient_as_bucket_view`` and Megatron's
contiguous buffers. A post-accumulate-grad hook on every parameter marks it ready; when a
bucket's parameters are all ready its ``MPI_Iallreduce`` starts while backward goes on, and
each later hook drives MPI's progress (MPICH progresses a non-blocking collective only inside
MPI calls). :meth:`GradientBuckets.finish`, between ``backward()`` and ``step()``, starts
what is left and waits: the last bucket is the only one a step has to wait for.

Buckets start in index order on every rank, never out of turn (non-blocking collectives
must be issued in the same order everywhere), and a bucket holding a parameter without a
gradient starts in :meth:`~GradientBuckets.finish`, with zeros for it: that rank contributes
nothing, and the parameter is then stepped with the average like the others, on every rank.
Each rank's bucket is scaled by its share of the global batch before the sum (one pass, on a
bucket still in cache), so the result is the gradient of the global batch's mean loss.

GPU buffers are not bucketed yet: they are averaged whole in :meth:`~GradientBuckets.finish`
(NCCL on the compute stream, :mod:`.nccl`).
"""
from __future__ import annotations

import contextlib

from . import comm as _c

#: PyTorch DDP's defaults: a small first bucket (it is ready earliest), then 25 MB
FIRST_BUCKET_MB = 1.0
BUCKET_CAP_MB = 25.0


def bucket_ranges(sizes: list[int], itemsize: int, cap_mb: float = BUCKET_CAP_MB,
                  first_mb: float = FIRST_BUCKET_MB) -> list[tuple[int, int]]:
    """Parameter index ranges ``(lo, hi)``, last parameters first: each bucket takes parameters
    from the end until it holds at least its cap (the first ``first_mb``, the others ``cap_mb``)."""
    if cap_mb <= 0 or first_mb <= 0:
        raise ValueError(f"bucket sizes must be positive, got cap {cap_mb} MB and first {first_mb} MB")
    out, hi, nbytes, cap = [], len(sizes), 0, first_mb * 2 ** 20
    for i in range(len(sizes) - 1, -1, -1):
        nbytes += sizes[i] * itemsize
        if nbytes >= cap:
            out.append((i, hi))
            hi, nbytes, cap = i, 0, cap_mb * 2 ** 20
    if hi > 0:
        out.append((0, hi))
    return out


class _Bucket:
    __slots__ = ("flat", "params", "view", "waiting", "ready", "request")

    def __init__(self, flat, lo: int, hi: int):
        self.flat = flat
        self.params = flat.params[lo:hi]
        self.view = flat.grad[flat.offsets[lo][0]:flat.offsets[hi - 1][1]]  # contiguous: a view, no copy
        self.waiting = hi - lo
        self.ready = set()
        self.request = None


class GradientBuckets:
    """Averages an optimizer's flat gradient buffers over the ranks, overlapped with backward.

    Made by :meth:`TrainingSetup.prepare(model, optimizer) <backprop_gpu.distributed.TrainingSetup.prepare>`;
    ``TrainingSetup.after_backward`` calls :meth:`finish`. ``weight`` (optional) returns this
    rank's share of the global batch at the time a bucket starts (``None``: every rank counts
    equally). Buffers of host backends go through ``MPI_Iallreduce``; GPU buffers are averaged
    whole in :meth:`finish`.
    """

    def __init__(self, optimizer, weight=None, timeout: float | None = None, bucket_cap_mb: float = BUCKET_CAP_MB,
                 first_bucket_mb: float = FIRST_BUCKET_MB):
        self.optimizer = optimizer
        self.weight = weight
        self.timeout = timeout
        self.cap_mb, self.first_mb = bucket_cap_mb, first_bucket_mb
        self._accumulating = False
        #: how many buckets started during backward (their communication hidden, at least in part)
        self.started_early = 0
        self._handles = []
        self._build(optimizer.flat_groups)

    def _build(self, flats) -> None:
        for h in self._handles:
            h.remove()
        self._flats = list(flats)
        self.buckets, self._host, self._gpu = [], [], []
        for f in self._flats:
            if not f.backend.is_host:
                self._gpu.append(f)
                continue
            for lo, hi in reversed_ranges(f, self.cap_mb, self.first_mb):
                self.buckets.append(_Bucket(f, lo, hi))
        owner = {}
        for b in self.buckets:
            for p in b.params:
                owner[id(p)] = b
        self._handles = [p.register_post_accumulate_grad_hook(self._ready_hook(owner[id(p)]))
                         for b in self.buckets for p in b.params]
        self._next = 0  # the first bucket not yet started

    def _ready_hook(self, bucket):
        def ready(p):
            if self._accumulating:
                return
            if id(p) in bucket.ready:
                raise _c.DistributedError(
                    "a parameter's gradient was completed twice before the gradients were averaged: backward "
                    "ran again before setup.after_backward(optimizer). For gradient accumulation over several "
                    "backward calls, run all but the last inside `with setup.no_sync():`.")
            bucket.ready.add(id(p))
            bucket.waiting -= 1
            self._start_ready()
        return ready

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside this block only accumulates gradients; the next backward outside it
        averages the sum (as ``DistributedDataParallel.no_sync``)."""
        self._accumulating = True
        try:
            yield
        finally:
            self._accumulating = False

    def _scale(self) -> float:
        w = self.weight() if self.weight is not None else None
        return 1.0 / _c.get_world_size() if w is None else w

    def _start(self, b) -> None:
        from mpi4py import MPI

        _c.zero_missing_grads(b.params)  # parameters unused on this rank this step
        scale = self._scale()
        if scale != 1.0:
            b.view *= scale
        b.request = _c.get_comm().Iallreduce(MPI.IN_PLACE, b.view, op=MPI.SUM)

    def _start_ready(self) -> None:
        reqs = [b.request for b in self.buckets[:self._next] if b.request is not None]
        if reqs:
            from mpi4py import MPI

            MPI.Request.Testall(reqs)  # progress for what is in flight
        while self._next < len(self.buckets) and self.buckets[self._next].waiting == 0:
            self._start(self.buckets[self._next])
            self._next += 1
            self.started_early += 1

    def finish(self) -> None:
        """Start the buckets backward did not complete, wait for all, and average the GPU buffers."""
        while self._next < len(self.buckets):
            self._start(self.buckets[self._next])
            self._next += 1
        reqs = [b.request for b in self.buckets]
        if reqs:
            _c.wait(reqs, f"the gradient all-reduce ({sum(b.view.size for b in self.buckets)} values in "
                          f"{len(reqs)} buckets)", self.timeout)
        if self._gpu:
            self._finish_gpu()
        for b in self.buckets:
            b.waiting, b.request = len(b.params), None
            b.ready.clear()
        self._next = 0
        # only now, with nothing in flight: a group re-flattened since the buckets were cut (a parameter
        # changed shape) left them over the old buffers, so this step is averaged whole, and re-cut
        flats = self.optimizer.flat_groups
        if [id(f) for f in flats] != [id(f) for f in self._flats]:
            self._build(flats)
            _c.all_reduce_gradients(self.optimizer, weight=self.weight() if self.weight else None,
                                    timeout=self.timeout)

    def _finish_gpu(self) -> None:
        from .nccl import all_reduce_mean

        all_reduce_mean([(f.grad, f.backend) for f in self._gpu], self.weight() if self.weight else None,
                        self.timeout)

    def remove(self) -> None:
        """Unregister the hooks (the optimizer is no longer averaged through these buckets)."""
        for h in self._handles:
            h.remove()
        self._handles = []


def reversed_ranges(flat, cap_mb: float, first_mb: float) -> list[tuple[int, int]]:
    """:func:`bucket_ranges` of a flat group's parameters."""
    sizes = [hi - lo for lo, hi in flat.offsets]
    return bucket_ranges(sizes, flat.grad.itemsize, cap_mb, first_mb)
