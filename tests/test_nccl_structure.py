"""The NCCL gradient average's structure, on the CPU: through the recording CuPy stand-in and a
recording NCCL, it queues ONE averaging all-reduce per device and returns without waiting on the
host (no sync, no busy-wait, no extra pass over the gradients); the watchdog waits only when the
previous step's all-reduce is still unfinished at the next call. The real NCCL runs in the
``gpu``-marked tests of test_distributed.py."""
import types

import numpy as np
import pytest

import recording_cupy
from backprop_gpu.distributed import comm, nccl as nccl_mod


class Event:
    """A CUDA event whose completion the test decides: ``done`` is False ``pending`` times."""

    pending = 0
    polls = 0

    def __init__(self, block=False, disable_timing=True):
        self.left = Event.pending

    def record(self, stream=None):
        pass

    @property
    def done(self):
        Event.polls += 1
        self.left -= 1
        return self.left < 0


def fake_nccl(version=22000):
    calls = []
    m = types.ModuleType("cupy.cuda.nccl")
    m.available = True
    m.NCCL_SUM, m.NCCL_FLOAT16, m.NCCL_FLOAT32, m.NCCL_FLOAT64 = 0, 6, 7, 8
    m.get_version = lambda: version
    m.groupStart = lambda: calls.append("groupStart")
    m.groupEnd = lambda: calls.append("groupEnd")

    class NcclCommunicator:
        def __init__(self, world, uid, rank):
            self.world = world

        def allReduce(self, send, recv, count, dtype, op, stream):
            calls.append(("allReduce", count, dtype, op))

        def check_async_error(self):
            pass
    m.NcclCommunicator = NcclCommunicator
    m.NcclError = RuntimeError
    return m, calls


@pytest.fixture
def nccl(monkeypatch, tmp_path_factory):
    rec, backend = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    m, calls = fake_nccl()
    import sys

    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", m)
    monkeypatch.setattr(sys.modules["cupy"].cuda, "nccl", m, raising=False)
    monkeypatch.setattr(sys.modules["cupy"].cuda, "Event", Event, raising=False)
    group = nccl_mod.NcclGroup(2, 0, (0,) * 128, 0)
    monkeypatch.setattr(nccl_mod, "_groups", {0: group})
    monkeypatch.setattr(nccl_mod, "_decided", (True, None))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    Event.pending, Event.polls = 0, 0
    return rec, backend, calls, group


def test_equal_shards_are_averaged_by_nccl_with_no_sync_and_no_extra_pass(nccl):
    rec, backend, calls, group = nccl
    g = backend.asarray(np.ones(1000, np.float32))
    h = backend.asarray(np.ones(10, np.float64))
    Event.pending = 10 ** 6  # the device never finishes while we look: the host must not wait for it
    with rec.count() as c:
        nccl_mod.all_reduce_mean([(g, backend), (h, backend)], weight=0.5)
    assert (c.syncs, c.launches, c.h2d) == (0, 0, 0), c.table()
    assert calls == ["groupStart", ("allReduce", 1000, 7, 4), ("allReduce", 10, 8, 4), "groupEnd"]  # 4: ncclAvg
    assert Event.polls == 0


def test_an_uneven_share_costs_one_scaling_pass(nccl):
    rec, backend, calls, group = nccl
    g = backend.asarray(np.ones(8, np.float32))
    with rec.count() as c:
        nccl_mod.all_reduce_mean([(g, backend)], weight=0.25)  # 2 ranks: scaled by 0.5, then averaged
    assert (c.syncs, c.launches) == (0, 1), c.table()
    np.testing.assert_array_equal(recording_cupy.to_host(g), np.full(8, 0.5, np.float32))
    assert calls[1][3] == 4


def test_the_watchdog_waits_only_for_an_all_reduce_still_running_at_the_next_call(nccl, monkeypatch):
    rec, backend, calls, group = nccl
    monkeypatch.setattr(nccl_mod.time, "sleep", lambda s: None)
    g = backend.asarray(np.ones(4, np.float32))
    Event.pending = 0  # finished by the next call: no waiting at all
    group.all_reduce([g], timeout=5, average=True)
    group.all_reduce([g], timeout=5, average=True)
    assert Event.polls == 1  # the one check of the first, at the second call
    Event.pending, Event.polls = 500, 0  # still running at the next call: the host waits for it there
    group.all_reduce([g], timeout=5, average=True)
    assert Event.polls == 1
    group.all_reduce([g], timeout=5, average=True)
    assert Event.polls == 502
    group.synchronize(timeout=5)
    aborted = []

    def abort(message):
        aborted.append(message)
        raise SystemExit(3)
    monkeypatch.setattr(group, "_abort", abort)
    Event.pending = 10 ** 9  # hung: the watchdog ends the job after the timeout
    clock = iter(range(10 ** 6))  # one second per look at the clock
    monkeypatch.setattr(nccl_mod.time, "monotonic", lambda: next(clock))
    group.all_reduce([g], timeout=5, average=True)
    with pytest.raises(SystemExit):
        group.synchronize(timeout=5)
    assert "waited" in aborted[0] and "timeout 5 s" in aborted[0]


def test_an_nccl_without_average_sums_and_divides(nccl, monkeypatch):
    rec, backend, calls, group = nccl
    m, calls = fake_nccl(version=20900)
    import sys

    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", m)
    monkeypatch.setattr(sys.modules["cupy"].cuda, "nccl", m)
    monkeypatch.setattr(group, "comm", m.NcclCommunicator(2, None, 0))
    g = backend.asarray(np.full(4, 6.0, np.float32))
    with rec.count() as c:
        group.all_reduce([g], timeout=5, average=True)
    assert calls[1][3] == 0 and c.launches == 1  # NCCL_SUM, then one division
    np.testing.assert_array_equal(recording_cupy.to_host(g), np.full(4, 3.0, np.float32))
