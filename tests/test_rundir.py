"""Run directories: one per run, `latest` following the newest, other runs' directories refused."""
import contextlib
import json
import os
import shutil
import subprocess

import pytest

from backprop_gpu.app import rundir
from backprop_gpu.app.rundir import RunDirError


@contextlib.contextmanager
def unwritable(directory):
    """``directory`` made so that no file can be created in it, for as long as the block runs.

    chmod 0o500 binds everyone but root; as root (these containers), the immutable attribute does,
    where the file system has it."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o500)
        try:
            yield directory
        finally:
            os.chmod(directory, 0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("running as root, where chmod does not stop writes, and chattr +i is unavailable here")
    try:
        probe = directory / ".can-root-write"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("running as root, and the immutable attribute does not stop writes on this file system")
        yield directory
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


@pytest.fixture
def fixed_clock(monkeypatch):
    """Every run starts in the same second, 2026-01-02 03:04:05."""
    real = rundir.time.strftime
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt, *t: real(fmt, *t) if t else
                        real(fmt, (2026, 1, 2, 3, 4, 5, 4, 2, 0)))


def new_run(root, **kw):
    return rundir.create(rundir.plan(root=root, **kw), ["backprop-gpu", "train"])


def test_runs_get_their_own_directories_and_latest_links_the_newest(tmp_path, fixed_clock):
    root = tmp_path / "runs"
    a, b, c = new_run(root), new_run(root), new_run(root)
    assert [a.name, b.name, c.name] == ["20260102-030405", "20260102-030405-1", "20260102-030405-2"]
    latest = root / "latest"
    assert latest.is_symlink() and os.readlink(latest) == c.name  # relative: the runs directory can move
    assert sorted(p.name for p in root.iterdir()) == sorted([a.name, b.name, c.name, "latest"])  # no temp files
    info = json.loads((c / "run.json").read_text())
    assert info["command"] == ["backprop-gpu", "train"] and len(info["run_id"]) == 12 and info["started"]
    assert json.loads((a / "run.json").read_text())["run_id"] != info["run_id"]
    assert rundir.resolve_latest(latest / "checkpoint.safetensors") == c / "checkpoint.safetensors"
    d = new_run(root, name="exp1")
    assert d == root / "exp1" and os.readlink(latest) == "exp1"


def test_latest_is_a_pointer_file_where_there_are_no_symlinks(tmp_path, monkeypatch, fixed_clock):
    def no_symlinks(*a, **k):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(rundir.os, "symlink", no_symlinks)
    root = tmp_path / "runs"
    new_run(root)
    b = new_run(root)
    latest = root / "latest"
    assert latest.is_file() and not latest.is_symlink() and latest.read_text().strip() == b.name
    assert rundir.resolve_latest(latest) == b
    assert rundir.resolve_latest(latest / "best.safetensors") == b / "best.safetensors"
    (b / "checkpoint.safetensors").write_bytes(b"x")
    plan = rundir.plan(resume=latest)  # resuming continues the run latest names, in its own directory
    assert plan.path == b and plan.resuming and plan.resume == b and plan.root is None


def test_a_latest_directory_of_an_older_version_is_moved_aside(tmp_path, fixed_clock):
    root = tmp_path / "runs"
    old = root / "latest"
    old.mkdir(parents=True)
    (old / "best.safetensors").write_bytes(b"an earlier run's weights")
    logged = []
    run = rundir.create(rundir.plan(root=root), [], log=logged.append)
    aside = [p for p in root.iterdir() if p.name.endswith("-legacy")]
    assert len(aside) == 1 and (aside[0] / "best.safetensors").read_bytes() == b"an earlier run's weights"
    assert os.readlink(old) == run.name and str(aside[0]) in logged[0]


def test_owner_and_plan_refuse_another_runs_directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / ".checkpoint.safetensors.x.tmp").write_bytes(b"debris of a killed save")
    assert rundir.owner(d) is None and rundir.plan(out=d).path == d
    (d / "metrics.csv").write_text("epoch\n")  # a run from before run.json
    assert "metrics.csv" in rundir.owner(d)
    with pytest.raises(RunDirError, match=f"{d} holds another run .*--overwrite.*--resume {d}"):
        rundir.plan(out=d)
    first = rundir.create(rundir.plan(out=d, overwrite=True), [])
    run_id = json.loads((first / "run.json").read_text())["run_id"]
    with pytest.raises(RunDirError, match=f"run {run_id} started"):
        rundir.plan(out=d)
    assert rundir.plan(out=d, check=False).path == d  # other ranks write nothing, and check nothing


def test_overwrite_deletes_the_old_runs_outputs_only(tmp_path):
    d = tmp_path / "run"
    rundir.create(rundir.plan(out=d), ["first"])
    for n in rundir.RUN_OUTPUTS:
        (d / n).write_bytes(b"old")
    (d / "notes.txt").write_text("mine")
    rundir.create(rundir.plan(out=d, overwrite=True), ["second"])
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "run.json"]
    info = json.loads((d / "run.json").read_text())
    assert info["command"] == ["second"] and info["replaced"].startswith("run ")


def test_resuming_continues_the_same_run(tmp_path):
    d = tmp_path / "run"
    rundir.create(rundir.plan(out=d), ["first"])
    (d / "checkpoint.safetensors").write_bytes(b"x")
    run_id = json.loads((d / "run.json").read_text())["run_id"]
    for resume in (d, d / "checkpoint.safetensors"):
        plan = rundir.plan(resume=resume)
        assert plan.path == d and plan.resuming
        rundir.create(plan, ["again"])
    info = json.loads((d / "run.json").read_text())
    assert info["run_id"] == run_id and [r["command"] for r in info["resumed"]] == [["again"], ["again"]]
    branch = rundir.plan(out=tmp_path / "branch", resume=d)  # a new run from another's checkpoint
    assert not branch.resuming and json.loads((rundir.create(branch, []) / "run.json").read_text())[
        "resumed_from"] == str(d)
    with pytest.raises(RunDirError, match="holds another run"):  # resuming X does not open Y
        rundir.plan(out=tmp_path / "branch", resume=d)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rundir.plan(resume=tmp_path / "nope.safetensors")


def test_two_runs_started_into_one_directory_at_once(tmp_path):
    d = tmp_path / "run"
    p1, p2 = rundir.plan(out=d), rundir.plan(out=d)  # both checked while it was empty
    rundir.create(p1, [])
    with pytest.raises(RunDirError, match="appeared as this run started"):
        rundir.create(p2, [])


def test_unusable_places_are_refused_before_anything_is_made(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(RunDirError, match=f"--out {f} is a file"):
        rundir.plan(out=f)
    with pytest.raises(RunDirError, match=f"{f} is a file"):
        rundir.plan(out=f / "sub")
    with pytest.raises(RunDirError, match="--runs-dir"):
        rundir.plan(root=f)
    with pytest.raises(RunDirError, match="give --out or those"):
        rundir.plan(out=tmp_path / "a", name="b")
    for bad in ("", "a/b", "..", ".hidden", "latest", " x"):
        with pytest.raises(RunDirError, match="--name"):
            rundir.plan(root=tmp_path, name=bad)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_an_unwritable_directory_is_found_by_the_probe(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    with unwritable(d):
        plan = rundir.plan(out=d)
        with pytest.raises(RunDirError, match=f"cannot write to the run directory {d}"):
            rundir.create(plan, [])
        with pytest.raises(RunDirError, match="cannot create the run directory"):
            rundir.create(rundir.plan(root=d), [])
    assert list(d.iterdir()) == []
