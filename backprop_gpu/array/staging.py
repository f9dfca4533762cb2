"""Host batches to a GPU without stalling it: pinned buffers, a copy stream, events.

:class:`BatchStager` copies host arrays (a DataLoader's batches) to one CuPy device the way
design.md asks: each array is gathered into a page-locked (pinned) host buffer, copied with
``ndarray.set(..., stream=...)`` on a non-blocking side stream (asynchronous, since the source is
pinned), and an event recorded there after the copies. :meth:`BatchStager.ready` makes the compute
stream wait for that event on the device: no host sync. The copies themselves wait (on the device)
for the compute work queued when they are issued, since their device arrays come from the compute
stream's memory pool (CuPy has no ``record_stream``); the host never blocks on them. Two buffer sets are kept per slot name,
so batch ``i + 1`` can be gathered and sent while batch ``i`` is in use; before a buffer set is
refilled the host waits for *its* copy (issued a batch earlier, so normally long done): a wait on
the copy stream only, never on compute.

Nothing here touches CuPy at import time.
"""
from __future__ import annotations

import numpy as np


class StagedBatch:
    """Device arrays whose copies were issued on the side stream; :meth:`BatchStager.ready` before use."""

    __slots__ = ("arrays", "event")

    def __init__(self, arrays, event):
        self.arrays = arrays
        self.event = event


class BatchStager:
    """Pinned double buffers and a copy stream for the CuPy ``arrays`` module of one device (a
    :class:`~backprop_gpu.array.modules.CupyArrays`)."""

    BUFFERS = 2  # batch i in use while batch i + 1 is gathered and copied

    def __init__(self, arrays):
        import cupy
        import cupyx

        self._cupy, self._cupyx = cupy, cupyx
        self._device = arrays.cuda_device
        with self._device:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pinned: dict = {}  # (slot, buffer) -> pinned host array (grown as needed)
        self._events: dict = {}  # buffer -> the event after its last copies
        self._turn = 0

    def _buffer(self, slot, k, shape, dtype):
        buf = self._pinned.get((slot, k))
        n = int(np.prod(shape))
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = self._pinned[(slot, k)] = self._cupyx.empty_pinned((max(n, 1),), dtype)
        return buf[:n].reshape(shape)

    def stage(self, *gathers) -> StagedBatch:
        """Issue the copies of one batch: each ``gathers`` item is ``(source, rows)``, a host array
        and the row indices to take (``None``: all of it), gathered straight into a pinned buffer."""
        k = self._turn
        self._turn = (k + 1) % self.BUFFERS
        done = self._events.get(k)
        if done is not None:
            done.synchronize()  # this buffer's previous copy (a batch ago): the copy stream only
        out, hosts = [], []
        with self._device:
            for slot, (src, rows) in enumerate(gathers):
                shape = src.shape if rows is None else (len(rows),) + src.shape[1:]
                host = self._buffer(slot, k, shape, src.dtype)
                if rows is None:
                    host[...] = src
                else:
                    np.take(src, rows, axis=0, out=host)
                hosts.append(host)
                out.append(self._cupy.empty(shape, src.dtype))
            # the device arrays come from the compute stream's pool, where a block freed a step ago
            # may still be read by queued kernels: the copies wait (on the device) for what is queued
            self._stream.wait_event(self._cupy.cuda.get_current_stream().record())
            for dev, host in zip(out, hosts):
                dev.set(host, stream=self._stream)
            event = self._events[k] = self._stream.record()
        return StagedBatch(out, event)

    def ready(self, batch: StagedBatch):
        """Make the compute (current) stream wait for ``batch``'s copies, on the device; its arrays."""
        with self._device:
            self._cupy.cuda.get_current_stream().wait_event(batch.event)
        return batch.arrays


__all__ = ["BatchStager", "StagedBatch"]
