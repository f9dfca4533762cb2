"""Data-parallel step time, hidden communication and scaling efficiency on the CPU, 1, 2 and 4 ranks.

    python -m pytest benchmarks/bench_distributed.py --benchmark-only

Each case launches ``tests/dist_scripts/step_timer.py`` (plain python for one
rank, ``mpiexec -n N`` for more), which times training steps of a
784-512-512-10 MLP (669,706 parameters) with SGD at a fixed *global* batch of
512, i.e. 512 / N samples per rank (strong scaling). Two ways of averaging the
gradients alternate step by step in each run: ``whole`` (one all-reduce of the
whole flat buffer after backward) and ``buckets`` (buckets of the flat buffer
all-reduced as backward completes them, what ``setup.prepare(model, optimizer)``
and the CLI use). The timed region excludes start-up; the numbers are in
``extra_info``:

* ``step_ms`` (buckets) and ``whole_step_ms``: median wall time of one
  data-parallel step (the slowest rank);
* ``allreduce_ms`` and ``whole_allreduce_ms``: of which the step waits for the
  gradient average (including waiting for the slower rank);
* ``hidden`` = 1 - allreduce_ms / whole_allreduce_ms: the share of the
  communication that buckets take off the step's wait;
* ``speedup`` = step_ms(1 rank) / step_ms(N ranks), ``efficiency`` (and
  ``scaling_efficiency``, which ``report.py`` shows) = speedup / N.

The benchmark's own timing is the whole launch, start-up included. Ranks
share the machine's cores (``setup_for_training`` gives each rank
cores / ranks threads, at least one), so on a 2-core machine one rank uses both
cores, two ranks one each, and four ranks oversubscribe the cores two to one.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from common import tag

WORKLOAD = "data-parallel SGD step, MLP 784-512-512-10, global batch 512"

def _mpiexec():
    """The mpiexec of the MPI that mpi4py uses (the mpich wheel puts it beside python), or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sysconfig.get_path("scripts")) / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "dist_scripts" / "step_timer.py"
_results: dict[int, dict] = {}


def _run(world: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    cmd = ([MPIEXEC, "-n", str(world)] if world > 1 else []) + [sys.executable, str(SCRIPT), "--steps", "40"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    _results[world] = res
    return res


@pytest.mark.parametrize("world", [1, 2, 4])
def test_data_parallel_step(benchmark, world):
    if world > 1 and MPIEXEC is None:
        pytest.skip("needs mpi4py and its mpiexec: pip install mpi4py mpich")
    res = benchmark.pedantic(_run, args=(world,), rounds=1, iterations=1)
    tag(benchmark, WORKLOAD, f"backprop_gpu, {world} MPI rank{'s' if world > 1 else ''}", **res)
    if world > 1:
        one = _results.get(1) or _run(1)
        speedup = one["step_ms"] / res["step_ms"]
        benchmark.extra_info.update(step_ms_1_rank=one["step_ms"], speedup=speedup, efficiency=speedup / world,
                                    scaling_efficiency=speedup / world)
    print(f"\n{world} rank(s): {json.dumps(benchmark.extra_info)}")
