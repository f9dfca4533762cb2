"""Data-parallel training: sharding (in process) and, under ``mpiexec -n 2`` on the CPU, equivalence
with one process, checkpoints across rank counts, the CLI, and failures that end in bounded time."""
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import distributed as dist
from backprop_gpu.app.data import ArrayDataset
from backprop_gpu.utils.data import DataLoader

SCRIPTS = Path(__file__).parent / "dist_scripts"
STEPS = SCRIPTS / "train_steps.py"
CLI = SCRIPTS / "cli_train.py"


def _mpiexec():
    """The mpiexec of the MPI that mpi4py uses (the mpich wheel puts it beside python), or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sysconfig.get_path("scripts")) / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and its mpiexec: pip install mpi4py mpich")


def launch(n, *args, mpi_args=(), timeout=120):
    """``python *args`` on ``n`` ranks (n=1: plain python, no MPI); returns (returncode, output, seconds)."""
    cmd = ([MPIEXEC, *mpi_args, "-n", str(n)] if n > 1 else []) + [sys.executable, *map(str, args)]
    return _run(cmd, timeout)


def launch_each(*per_rank, timeout=120):
    """One rank per argument list, ``python *args`` each (mpiexec's MPMD form ``-n 1 a : -n 1 b``)."""
    cmd = [MPIEXEC]
    for i, args in enumerate(per_rank):
        cmd += ([":"] if i else []) + ["-n", "1", sys.executable, *map(str, args)]
    return _run(cmd, timeout)


def _run(cmd, timeout):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "BACKPROP_GPU_DIST_TIMEOUT")}
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # mpiexec and every rank it started
        out, _ = p.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s:\n{out}")
    return p.returncode, out, time.monotonic() - t0


def params(path):
    z = np.load(path)
    return {k: z[k] for k in z.files if k not in ("calls", "world", "buckets", "early")}


def assert_same_params(a, b, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=atol, err_msg=k)


# -- in process: sharding and a world of one ------------------------------------------------
def test_shard_indices_partition_every_global_batch():
    n, bs, world = 61, 16, 2
    perm = np.random.default_rng(3).permutation(n)
    shards = [dist.shard_indices(n, r, world, perm, bs) for r in range(world)]
    sizes = dist.global_batch_sizes(n, bs, world)
    assert sizes == [16, 16, 16, 13]
    for step, g in enumerate(sizes):
        parts = [shards[r][step] for r in range(world)]
        assert [len(p) for p in parts] == ([8, 8] if g == 16 else [7, 6])
        np.testing.assert_array_equal(np.concatenate(parts), perm[step * bs:step * bs + g])  # disjoint, complete
    assert sorted(np.concatenate([s for r in shards for s in r]).tolist()) == list(range(n))


def test_shard_indices_edge_cases():
    # a last global batch with fewer samples than ranks is dropped on every rank
    assert [len(s) for s in dist.shard_indices(10, 0, 4, None, 8)] == [2]
    assert dist.global_batch_sizes(10, 8, 4) == [8]
    assert [len(s) for s in dist.shard_indices(10, 1, 2, None, 8, drop_last=True)] == [4]
    assert [len(s) for s in dist.shard_indices(10, 1, 3, None, None)] == [3]  # full batch: 4/3/3
    with pytest.raises(ValueError, match="outside a world"):
        dist.shard_indices(10, 2, 2)
    with pytest.raises(ValueError, match="epoch_perm"):
        dist.shard_indices(10, 0, 2, np.arange(9))


def test_shards_are_what_the_dataloader_yields():
    rng = np.random.default_rng(0)
    data = ArrayDataset(np.arange(61, dtype=np.float32)[:, None], rng.integers(0, 3, 61), "toy")
    for r in range(2):
        loader = dist.ShardedLoader(DataLoader(data, 16, shuffle=True, seed=5, rank=r, world_size=2), r, 2)
        perm = np.random.default_rng(5).permutation(61)  # the loader's own generator, first epoch
        got, weights = [], []
        for x, _ in loader:
            got.append(x.numpy()[:, 0].astype(int))
            weights.append(loader.weight)
        want = dist.shard_indices(61, r, 2, perm, 16)
        assert len(loader) == len(want) == 4
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert weights == [0.5, 0.5, 0.5, (7 if r == 0 else 6) / 13]


def test_sharded_loader_checks_the_loader_shard_and_delegates():
    data = ArrayDataset(np.zeros((10, 2), np.float32), np.zeros(10, np.int64), "toy")
    with pytest.raises(ValueError, match="rank=1, world_size=2"):
        dist.ShardedLoader(DataLoader(data, 4), rank=1, world_size=2)
    inner = DataLoader(data, 4, shuffle=True, rank=1, world_size=2)
    sl = dist.ShardedLoader(inner, rank=1, world_size=2)
    assert sl.dataset is data and sl.state_dict() == inner.state_dict()


def test_distributed_sampler_weights_add_up():
    samplers = [dist.DistributedSampler(61, 16, rank=r, world_size=2, seed=1) for r in range(2)]
    for s in samplers:
        s.set_epoch(2)
    steps = list(zip(*samplers))
    assert len(steps) == len(samplers[0]) == 4
    for (i0, w0), (i1, w1) in steps:
        assert w0 + w1 == pytest.approx(1.0) and not set(i0) & set(i1)
    with pytest.raises(ValueError, match="not divisible"):
        dist.DistributedSampler(61, 15, rank=0, world_size=2)


def test_buckets_take_parameters_from_the_end_until_full():
    from backprop_gpu.distributed.buckets import bucket_ranges

    mb = 2 ** 20 // 4  # float32 values in 1 MB
    # first bucket 1 MB, then 25 MB: [4] alone fills the first, [1..3] the second, [0] what is left
    assert bucket_ranges([10, 20 * mb, 3 * mb, 2 * mb, mb], 4) == [(4, 5), (1, 4), (0, 1)]
    assert bucket_ranges([5, 5], 4) == [(0, 2)]  # all under 1 MB: one bucket
    assert bucket_ranges([], 4) == []
    with pytest.raises(ValueError, match="bucket sizes must be positive"):
        bucket_ranges([1], 4, cap_mb=0)


def test_a_world_of_one_needs_no_mpi():
    assert dist.init() == (0, 1) and not dist.is_initialized()
    assert dist.get_rank() == 0 and dist.get_world_size() == 1
    setup = dist.setup_for_training("cpu")
    assert setup.is_main and not setup.distributed and (setup.rank, setup.world_size, setup.device) == (0, 1, "cpu")
    p = bg.tensor([1.0, 2.0], requires_grad=True)
    (p * p).sum().backward()
    dist.broadcast_parameters([p])
    assert dist.all_reduce_gradients([p]) == 0
    np.testing.assert_array_equal(p.grad.numpy(), [2.0, 4.0])  # untouched
    data = ArrayDataset(np.zeros((4, 1), np.float32), np.zeros(4, np.int64), "toy")
    loader = DataLoader(data, 2)
    assert setup.wrap_loader(loader) is loader
    dist.barrier()


def test_a_world_of_one_under_mpiexec_n_1_does_not_import_mpi(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "1")
    assert not dist.launched_under_mpi()
    monkeypatch.setenv("PMI_SIZE", "2")
    assert dist.launched_under_mpi()


def test_config_differences_name_every_entry_and_each_ranks_value():
    configs = [{"lr": 0.1, "seed": 0, "optimizer": "sgd"}, {"lr": 0.2, "seed": 0, "optimizer": "sgd"},
               {"lr": 0.1, "seed": 0, "optimizer": "adam", "epochs": 3}]
    from backprop_gpu.distributed.comm import _config_differences

    assert _config_differences(configs) == ["lr 0.1 (ranks 0, 2) vs 0.2 (rank 1)",
                                            "optimizer 'sgd' (ranks 0, 1) vs 'adam' (rank 2)",
                                            "epochs (not set) (ranks 0, 1) vs 3 (rank 2)"]
    assert _config_differences(configs[:1] * 3) == []


def test_config_and_failure_hooks_in_a_world_of_one(capsys):
    dist.check_same_config({"lr": 0.1})  # nothing to compare with
    setup = dist.setup_for_training("cpu")
    setup.prepare(bg.nn.Linear(2, 2), config={"lr": 0.1})
    assert dist.fail_all_ranks("backprop-gpu: error: bad", 2) == 2  # returns: the caller exits
    assert capsys.readouterr().err == "backprop-gpu: error: bad\n"  # one line, no rank in a world of one


# -- under mpiexec -n 2 ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, no MPI: the parameters after 8 steps with each optimizer (memoised)."""
    d, cache = tmp_path_factory.mktemp("one_rank"), {}

    def get(optim, n=61):
        key = (optim, n)
        if key not in cache:
            rc, out, _ = launch(1, STEPS, d / f"{optim}_{n}.npz", 8, "--optim", optim, "--n", n)
            assert rc == 0, out
            cache[key] = params(d / f"{optim}_{n}.npz")
        return cache[key]

    return get


@needs_mpi
@pytest.mark.parametrize("mode,optim,calls,buckets", [("setup", "sgd", 8, 1), ("setup", "adam", 8, 2),
                                                      ("whole", "sgd", 8, 0), ("flat", "adam", 8, 0),
                                                      ("tensors", "sgd", 32, 0)])
def test_two_ranks_take_the_same_steps_as_one(tmp_path, reference, mode, optim, calls, buckets):
    """Same seed, same global batch of 16 (8 per rank; the last batch of each epoch is 13, split 7/6):
    after 8 steps the parameters equal one process's to float32 rounding. ``setup`` averages in
    buckets started during backward: one bucket at the default size, two (one per layer) at 1e-4 MB."""
    extra = ["--bucket-mb", 1e-4] if buckets > 1 else []
    rc, out, _ = launch(2, STEPS, tmp_path / "two.npz", 8, "--optim", optim, "--mode", mode, *extra)
    assert rc == 0, out
    z = np.load(tmp_path / "two.npz")
    assert int(z["world"]) == 2
    assert int(z["calls"]) == calls  # flat: ONE all-reduce per step for the whole model; tensors: one per tensor
    assert int(z["buckets"]) == buckets
    # every bucket's gradients are final before backward ends, so each one starts during backward
    assert int(z["early"]) == 8 * buckets
    assert_same_params(reference(optim), params(tmp_path / "two.npz"))


@needs_mpi
def test_a_second_backward_before_averaging_is_refused_with_the_way_out(tmp_path):
    rc, out, _ = launch(2, STEPS, tmp_path / "two.npz", 2, "--backward-twice", "--bucket-mb", 1e-4)
    assert rc == 5, out
    assert "backward ran again before setup.after_backward(optimizer)" in out and "setup.no_sync()" in out, out


@needs_mpi
@pytest.mark.parametrize("mode", ["setup", "whole"])
def test_a_parameter_unused_on_one_rank_is_averaged_with_zeros_there(tmp_path, mode):
    """Rank 1's loss skips the last layer: its gradient there is None, and that rank contributes zeros
    (its slot is not left holding the previous step's values); every rank ends with the same parameters."""
    rc, out, _ = launch(2, STEPS, tmp_path / "two.npz", 4, "--mode", mode, "--unused-on-rank", 1,
                        "--bucket-mb", 1e-4)
    assert rc == 0, out
    z = params(tmp_path / "two.npz")
    assert len(z) == 6 and all(np.isfinite(v).all() for v in z.values())


@needs_mpi
def test_equal_shards_need_no_weights(tmp_path, reference):
    rc, out, _ = launch(2, STEPS, tmp_path / "two.npz", 8, "--mode", "unweighted", "--n", 64)
    assert rc == 0, out
    assert_same_params(reference("sgd", 64), params(tmp_path / "two.npz"))


@needs_mpi
def test_mismatched_models_fail_clearly_on_every_rank(tmp_path):
    rc, out, secs = launch(2, STEPS, tmp_path / "x.npz", 2, "--mismatch", "--timeout", 20, timeout=60)
    assert rc == 4, out
    for r in (0, 1):
        assert f"rank {r}: ranks built different models (rank 0: 4 tensors, 227 values; rank 1: 4 tensors, " \
               "241 values); first difference: rank 0 has 0.weight (16, 10) float32, rank 1 has 0.weight " \
               "(17, 10) float32" in out


@needs_mpi
@pytest.mark.parametrize("how,who", [("--stall-rank", 1), ("--quit-rank", 0)])
def test_a_hung_or_departed_rank_aborts_the_job_in_bounded_time(tmp_path, how, who):
    rc, out, secs = launch(2, STEPS, tmp_path / "x.npz", 50, how, who, "--timeout", 3, timeout=90)
    assert rc == dist.ABORT_CODE, out  # the watchdog's own exit code: it, not mpiexec, ended the job
    # mpiexec sometimes drops the aborting rank's last output; when it is there it must say why
    if out.strip():
        assert re.search(r"rank [01]: waited 3\.0 s for", out), out
        assert "Aborting all 2 ranks" in out
    assert secs < 60


@needs_mpi
def test_a_crashed_rank_ends_the_job(tmp_path):
    rc, out, secs = launch(2, STEPS, tmp_path / "x.npz", 50, "--die-rank", 1, "--timeout", 3, timeout=90)
    assert rc != 0 and secs < 60, out  # mpiexec stops the others at once


@needs_mpi
def test_the_watchdog_also_catches_a_crash_when_mpiexec_does_not_clean_up(tmp_path):
    rc, out, secs = launch(2, STEPS, tmp_path / "x.npz", 50, "--die-rank", 1, "--timeout", 3,
                           mpi_args=["-disable-auto-cleanup"], timeout=90)
    if "disable-auto-cleanup" in out:
        pytest.skip(f"this mpiexec does not take -disable-auto-cleanup: {out[:200]}")
    assert rc == dist.ABORT_CODE and secs < 60, out
    assert not out.strip() or re.search(r"rank 0: waited 3\.0 s for", out), out


@needs_mpi
@pytest.mark.slow
def test_checkpoints_resume_with_any_number_of_ranks(tmp_path):
    """Through the CLI's code path (plus wrap_loader) on digits: 2 epochs on one process == 1 epoch on
    2 ranks then 1 on one == 1 on one then 1 on 2 ranks."""
    from safetensors.numpy import load_file

    opts = ["--optimizer", "sgd", "--hidden", "32", "--no-progress"]

    def run(n, out, epochs, resume=False):
        args = [*opts, "--epochs", epochs, "--out", tmp_path / out] + (["--resume", tmp_path / out] if resume else [])
        rc, text, _ = launch(n, CLI, *args)
        assert rc == 0, text
        return text

    def model(out):
        sd = load_file(tmp_path / out / "checkpoint.safetensors")
        return {k: v for k, v in sd.items() if k.startswith("model.")}

    run(1, "one", 2)
    run(2, "two_then_one", 1)
    run(1, "two_then_one", 2, resume=True)
    run(1, "one_then_two", 1)
    text = run(2, "one_then_two", 2, resume=True)
    assert text.count("epoch   2/2") == 1 and "resumed from" in text  # rank 0 alone prints
    for d in ("two_then_one", "one_then_two"):
        assert_same_params(model("one"), model(d), rtol=1e-4, atol=1e-6)


@needs_mpi
def test_the_cli_runs_under_mpiexec(tmp_path):
    rc, out, _ = launch(2, "-m", "backprop_gpu.app.cli", "train", "--epochs", 1, "--no-progress", "--hidden", 16,
                        "--out", tmp_path / "run")
    assert rc == 0, out
    assert out.count("epoch   1/1") == 1 and "2 ranks" in out  # rank 0 alone prints
    for f in ("checkpoint.safetensors", "metrics.csv", "curves.png", "summary.json"):
        assert (tmp_path / "run" / f).exists()


TRAIN = ["-m", "backprop_gpu.app.cli", "train", "--epochs", 1, "--no-progress", "--hidden", 16]


@needs_mpi
@pytest.mark.parametrize("failing", [0, 1])
def test_a_handled_error_on_one_rank_ends_every_rank_at_once(tmp_path, failing):
    """Only one rank is given a checkpoint that does not exist. It prints the CLI's one-line error and
    ends the job with exit 2 at once; the others no longer wait for it until the watchdog (300 s)."""
    missing = tmp_path / "missing.safetensors"
    per_rank = [[*TRAIN, "--out", tmp_path / "run"] + (["--resume", missing] if r == failing else [])
                for r in range(2)]
    rc, out, secs = launch_each(*per_rank, timeout=60)
    assert rc == 2, out
    # one line: the CLI's error (whatever its wording after the path) and which rank ended the job
    assert re.search(rf"^backprop-gpu: error: checkpoint {re.escape(str(missing))} does not exist.* "
                     rf"\(rank {failing} of 2; ending all ranks\)$", out, re.M), out
    assert secs < 30 and "epoch   1/1" not in out, out


@needs_mpi
def test_ranks_started_with_different_settings_are_refused_before_training(tmp_path):
    rc, out, secs = launch_each([*TRAIN, "--out", tmp_path / "run", "--lr", 0.1],
                                [*TRAIN, "--out", tmp_path / "run", "--lr", 0.2, "--seed", 3], timeout=60)
    assert rc == 2, out
    assert "the ranks were started with different settings" in out
    assert "lr 0.1 (rank 0) vs 0.2 (rank 1); seed 0 (rank 0) vs 3 (rank 1)" in out
    assert secs < 30 and "epoch   1/1" not in out, out


# -- GPU ---------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_nccl_smoke_on_one_gpu():
    """A one-rank NCCL group on GPU 0 through our wrapper: the sum over one rank is the identity."""
    import cupy

    from backprop_gpu.distributed.nccl import NcclGroup, nccl_unavailable_reason

    why = nccl_unavailable_reason()
    if why:
        pytest.skip(why)
    from cupy.cuda import nccl

    group = NcclGroup(1, 0, nccl.get_unique_id(), 0)
    a = cupy.arange(1000, dtype=cupy.float32)
    b = cupy.ones(7, dtype=cupy.float64)
    group.all_reduce([a, b], timeout=30)
    cupy.cuda.get_current_stream().synchronize()
    assert a.get().tolist() == list(range(1000)) and b.get().tolist() == [1.0] * 7
    group.destroy()


@pytest.mark.gpu
@needs_mpi
def test_two_ranks_on_two_gpus_match_one(tmp_path):
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs 2 GPUs (NCCL takes one GPU per rank)")
    rc, out, _ = launch(1, STEPS, tmp_path / "one.npz", 8, "--device", "cuda")
    assert rc == 0, out
    rc, out, _ = launch(2, STEPS, tmp_path / "two.npz", 8, "--device", "cuda")
    assert rc == 0, out
    assert_same_params(params(tmp_path / "one.npz"), params(tmp_path / "two.npz"), rtol=1e-4, atol=1e-5)
