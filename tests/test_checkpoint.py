"""Checkpoints: round trip, atomic writes, and refusing damaged or foreign files without side effects."""
import os

import numpy as np
import pytest

import backprop_gpu as bg
from helpers import trained
from backprop_gpu import optim
from backprop_gpu.app import checkpoint, models
from backprop_gpu.app.checkpoint import CheckpointError
from backprop_gpu.optim import lr_scheduler


def test_round_trip(tmp_path):
    m, opt, sched = trained()
    path = tmp_path / "ck.safetensors"
    tensors, meta = checkpoint.pack(m, opt, sched, extra={"epoch": 3})
    checkpoint.save(path, tensors, meta)
    assert path.read_bytes()[:8] and b"pickle" not in path.read_bytes()
    m2, opt2, sched2 = trained(seed=5, steps=1)
    extra = checkpoint.restore(path, m2, opt2, sched2)
    assert extra == {"epoch": 3}
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    s1, s2 = opt.state_dict(), opt2.state_dict()
    np.testing.assert_array_equal(s1["state"][0]["exp_avg_sq"].numpy(), s2["state"][0]["exp_avg_sq"].numpy())
    assert s2["state"][0]["step"] == 3 and s2["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sched2.get_last_lr() == sched.get_last_lr()


def _snapshot(m, opt):
    return [p.numpy() for p in m.parameters()], opt.state_dict()["state"][0]["step"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_header", "empty"])
def test_damaged_checkpoints_are_refused_and_change_nothing(tmp_path, damage):
    m, opt, sched = trained()
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, *checkpoint.pack(m, opt, sched))
    data = path.read_bytes()
    bad = {"truncate": data[: len(data) // 2], "garbage": os.urandom(200), "empty": b"",
           "flip_header": data[:8] + b"[" + data[9:]}[damage]
    path.write_bytes(bad)
    m2, opt2, sched2 = trained(seed=1)
    before = _snapshot(m2, opt2)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.restore(path, m2, opt2, sched2)
    after = _snapshot(m2, opt2)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1] == after[1] and path.read_bytes() == bad


def test_wrong_architecture_is_refused_and_changes_nothing(tmp_path):
    m, opt, sched = trained(hidden=(8,))
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, *checkpoint.pack(m, opt, sched))
    other, opt_o, sched_o = trained(hidden=(5,), seed=2)
    before = _snapshot(other, opt_o)
    with pytest.raises(CheckpointError, match=r"0.weight: checkpoint \(8, 4\) vs model \(5, 4\)"):
        checkpoint.restore(path, other, opt_o, sched_o)
    for a, b in zip(before[0], _snapshot(other, opt_o)[0]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.restore(tmp_path / "missing.safetensors", other)


def test_save_is_atomic(tmp_path, monkeypatch):
    m, opt, sched = trained()
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, *checkpoint.pack(m, opt, sched))
    good = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, *checkpoint.pack(m, opt, sched, extra={"x": 1}))
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left behind


def test_other_optimizer_scheduler_or_extra_is_refused_and_changes_nothing(tmp_path):
    m, opt, sched = trained()
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, *checkpoint.pack(m, opt, sched, extra={"epoch": 3}))
    bg.manual_seed(7)
    m2 = models.mlp(4, 3, (8,))
    before = [p.numpy() for p in m2.parameters()]
    sgd = optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="optimizer state is for Adam, not SGD"):
        checkpoint.restore(path, m2, sgd)
    adam = optim.Adam(m2.parameters(), lr=0.5)
    with pytest.raises(CheckpointError, match="scheduler state is for StepLR, not ExponentialLR"):
        checkpoint.restore(path, m2, adam, lr_scheduler.ExponentialLR(adam, 0.9))

    def refuse(extra):
        if extra["epoch"] != 4:
            raise ValueError(f"epoch {extra['epoch']} is not 4")
    with pytest.raises(CheckpointError, match="epoch 3 is not 4"):
        checkpoint.restore(path, m2, adam, check_extra=refuse)
    with pytest.raises(CheckpointError, match="lacks the entry 'rows'"):
        checkpoint.restore(path, m2, adam, check_extra=lambda extra: extra["rows"])
    for a, b in zip(before, m2.parameters()):
        np.testing.assert_array_equal(a, b.numpy())
    assert adam.param_groups[0]["lr"] == 0.5 and not adam.state_dict()["state"]


def test_metadata_that_is_not_ours_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path), metadata={"backprop_gpu": "{not json"})
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    save_file({"w": np.zeros(3, np.float32)}, str(path), metadata={"backprop_gpu": '{"format": "other"}'})
    with pytest.raises(CheckpointError, match="has format 'other'"):
        checkpoint.load(path)


def test_save_follows_the_umask_and_removes_temp_files_of_killed_saves(tmp_path):
    m, opt, sched = trained()
    stale = tmp_path / ".ck.safetensors.abc123.tmp"  # what a save killed mid-write leaves
    stale.write_bytes(b"\0" * 1000)
    old = os.umask(0o027)
    try:
        checkpoint.save(tmp_path / "ck.safetensors", *checkpoint.pack(m, opt, sched))
    finally:
        os.umask(old)
    assert (tmp_path / "ck.safetensors").stat().st_mode & 0o777 == 0o640  # was 0600 whatever the umask
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]
