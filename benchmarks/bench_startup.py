"""Start-up as a user meets it: whole processes, from exec to exit.

Two workloads, each a fresh Python process, so every import, device probe and
Numba cache load is counted (targets of issue 16, on a warm 2-core machine):

* ``import backprop_gpu``: under 0.5 s;
* ``backprop-gpu train --epochs 1`` (digits, the default MLP, ``--device auto``,
  outputs in a temporary directory, progress bars to a pipe): under 3 s.

The CPU seconds (user + system, all threads) are reported beside the wall
time: on a shared, busy machine they move much less.

Beside them, as floors, ``python -c pass`` and ``python -c "import numpy"``.
The runs are interleaved round by round (one of each workload per round) after
one untimed warm-up round, which fills the OS file cache and Numba's on-disk
kernel cache, so drift on a shared machine hits every workload alike.

usage: python benchmarks/bench_startup.py [--runs 5] [--src DIR ...] [--json PATH]
       --src DIR times the package in DIR (e.g. an unpacked older commit) through PYTHONPATH;
       --src installed --src DIR interleaves the two in one run, for a before/after under the same load.
Under pytest (``python -m pytest benchmarks/bench_startup.py --benchmark-only``) each
workload is one pytest-benchmark row of 5 rounds, grouped for ``benchmarks/report.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORT = "start-up: import backprop_gpu (whole process)"
TRAIN = "start-up: backprop-gpu train --epochs 1 (whole process)"
#: the targets of issue 16, in seconds
TARGETS = {IMPORT: 0.5, TRAIN: 3.0}


def commands(runs_dir: str) -> dict[str, tuple[str, str, list[str]]]:
    """label -> (workload, role for report.py, argv) of each timed process; ``train`` calls the CLI's
    ``main`` as the ``backprop-gpu`` console script does, with its outputs under ``runs_dir``."""
    py = sys.executable
    train = [py, "-c", "import sys; from backprop_gpu.app.cli import main; sys.exit(main())",
             "train", "--epochs", "1", "--runs-dir", runs_dir]
    return {"python -c pass": (IMPORT, "floor", [py, "-c", "pass"]),
            "python -c 'import numpy'": (IMPORT, "floor", [py, "-c", "import numpy"]),
            "import backprop_gpu": (IMPORT, "ours", [py, "-c", "import backprop_gpu"]),
            "backprop-gpu train --epochs 1": (TRAIN, "ours", train)}


def env_for(src: str | None) -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # a user's process: no simulator
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(src).resolve()), env.get("PYTHONPATH")) if p)
    return env


def run_once(argv: list[str], env: dict, cwd: str) -> float:
    """Wall-clock seconds of one process; its CPU seconds (user + system) go to :data:`CPU_SECONDS`.
    ``cwd`` must not be a source checkout: ``python -c`` puts the working directory first on sys.path."""
    before = _children_cpu()
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=300)
    dt = time.perf_counter() - t0
    CPU_SECONDS.append(_children_cpu() - before)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    return dt


#: CPU seconds of each process run_once ran, in order: on a shared, busy machine the wall time
#: includes waiting for a core, the CPU time much less so
CPU_SECONDS: list[float] = []


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def measure(runs: int = 5, srcs=(None,)) -> tuple[dict[tuple, list[float]], dict[tuple, list[float]]]:
    """(wall seconds, CPU seconds) per run, keyed by (source, command label): every command of every
    source once per round, after one untimed warm-up round. ``None`` is the installed package."""
    envs = {src: env_for(src) for src in srcs}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(tmp)
        times: dict[tuple, list[float]] = {(src, label): [] for src in srcs for label in cmds}
        cpu: dict[tuple, list[float]] = {key: [] for key in times}
        for round_ in range(runs + 1):
            for src in srcs:
                for label, (_, _, argv) in cmds.items():
                    dt = run_once(argv, envs[src], tmp)
                    if round_:  # round 0 warms the file cache and Numba's kernel cache
                        times[(src, label)].append(dt)
                        cpu[(src, label)].append(CPU_SECONDS[-1])
    return times, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (default: 5)")
    p.add_argument("--src", action="append", default=None, metavar="DIR",
                   help="time the backprop_gpu package in DIR instead of the installed one; repeat it "
                        "(and 'installed' for the installed one) to interleave several in one run")
    p.add_argument("--json", default=None, help="also write the times here")
    args = p.parse_args(argv)
    srcs = [None if s == "installed" else s for s in (args.src or ["installed"])]
    times, cpu = measure(args.runs, srcs)
    import numpy

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (load average {load:.1f}), "
          f"CPython {platform.python_version()}, NumPy {numpy.__version__}; {args.runs} runs each, interleaved")
    cmds = commands("runs")
    for src in srcs:
        print(f"\npackage: {src or 'installed'}")
        print(f"  {'command':32s} {'median':>8s} {'min':>7s} {'max':>7s} {'CPU s':>7s}  target (median wall)")
        for label, (workload, role, _) in cmds.items():
            ts = times[(src, label)]
            med = statistics.median(ts)
            verdict = "" if role != "ours" else f"< {TARGETS[workload]:g} s: " + (
                "met" if med < TARGETS[workload] else "NOT met")
            print(f"  {label:32s} {med:7.2f}s {min(ts):6.2f}s {max(ts):6.2f}s "
                  f"{statistics.median(cpu[(src, label)]):6.2f}s  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": platform.python_version(),
            "cores": os.cpu_count(), "load_average": load,
            "wall_s": {src or "installed": {label: times[(src, label)] for label in cmds} for src in srcs},
            "cpu_s": {src or "installed": {label: cpu[(src, label)] for label in cmds} for src in srcs}},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:  # collected by pytest: one pytest-benchmark row per command
    import pytest
    from common import tag

    @pytest.mark.parametrize("label", list(commands("runs")))
    def test_startup(benchmark, label, tmp_path):
        workload, role, argv = commands(str(tmp_path))[label]
        env = env_for(None)
        run_once(argv, env, str(tmp_path))  # warm-up: file cache, Numba's kernel cache
        tag(benchmark, workload, label, role=role)
        benchmark.pedantic(run_once, args=(argv, env, str(tmp_path)), rounds=5, iterations=1)
