"""Data-parallel training under mpiexec on the CPU: equivalence with one rank, and failures that don't hang."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "dist_scripts" / "train_steps.py"


def _mpiexec():
    """The mpiexec that belongs to the MPI mpi4py uses (the mpich wheel puts it beside python)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sysconfig.get_path("scripts")) / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpi4py and an mpiexec are needed: pip install mpi4py mpich")


def launch(n, *args, timeout=120):
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [MPIEXEC, "-n", str(n), sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@needs_mpi
def test_two_ranks_match_one_rank(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    r1 = launch(1, one, 6)
    assert r1.returncode == 0, r1.stderr
    r2 = launch(2, two, 6)
    assert r2.returncode == 0, r2.stderr
    a, b = np.load(one), np.load(two)
    assert int(b["calls"]) == 6  # one all-reduce per step for the whole model (one flat buffer)
    for k in a.files:
        if k != "calls":
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=1e-6, err_msg=k)


@needs_mpi
def test_mismatched_models_fail_clearly(tmp_path):
    r = launch(2, tmp_path / "x.npz", 2, "--mismatch", timeout=60)
    assert r.returncode != 0
    assert "ranks built different models" in r.stdout + r.stderr


@needs_mpi
def test_a_dead_rank_does_not_hang_the_others(tmp_path):
    r = launch(2, tmp_path / "x.npz", 50, "--die-rank", "1", timeout=90)
    assert r.returncode != 0  # mpiexec or our watchdog ended the job well within the timeout


def test_single_process_without_mpiexec():
    from backprop_gpu import distributed as dist

    assert dist.init() == (0, 1) and not dist.is_initialized()
    setup = dist.setup_for_training("cpu")
    assert setup.is_main and setup.world_size == 1 and setup.device == "cpu"


@pytest.mark.gpu
def test_nccl_smoke_on_one_gpu():
    import cupy
    from cupy.cuda import nccl

    comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
    buf = cupy.arange(8, dtype=cupy.float32)
    comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                   cupy.cuda.get_current_stream().ptr)
    cupy.cuda.get_current_stream().synchronize()
    assert buf.get().tolist() == list(range(8))
