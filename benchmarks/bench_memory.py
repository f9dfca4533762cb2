"""Peak memory of a training step, ours beside torch's, for every training workload of the broad suite.

usage: python benchmarks/bench_memory.py [--only GROUP,...] [--match TEXT] [--steps N] [--json PATH]

Each (workload, library) runs in a fresh process, which imports both libraries,
makes the inputs, then builds only its own side: the model, its optimizer, and
two warm-up steps (kernels compiled, optimizer state and cached buffers made).
The resident set is then the *steady* footprint; the kernel's high-water mark
is reset (``/proc/self/clear_refs``, Linux) and ``--steps`` more steps run, so
the high-water mark after them is the step's *peak*. Both are reported as MB
above the resident set just before the model was built, so the libraries'
import footprints (the same in every process) cancel. Ratios ours / torch; the
target is at most 1.10 for the peak.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = ("mlp", "cnn", "transformer", "embedding", "lstm")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cases(groups):
    import workloads_broad as wb

    cases = {}
    for g in groups:
        fn = getattr(wb, f"{g}_cases", None)
        if fn is None:
            continue
        try:
            cases.update({name: (g, b) for name, b in fn().items() if hasattr(b, "one_side")})
        except AttributeError:  # a layer our nn lacks (the lstm group without nn.LSTM)
            continue
    return cases


def child(name: str, side: str, steps: int) -> dict:
    sys.path.insert(0, str(HERE))
    from common import TORCH  # noqa: F401 - thread counts, before NumPy, Numba and torch start

    cases = _cases(GROUPS)
    gc.collect()
    before = _status_kb("VmRSS")
    step = cases[name][1].one_side(side)
    for _ in range(2):
        step()
    gc.collect()
    steady = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    for _ in range(steps):
        step()
    peak = _status_kb("VmHWM")
    return {"steady_mb": (steady - before) / 1024, "peak_mb": (peak - before) / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(GROUPS), help="groups, comma-separated (default: all)")
    ap.add_argument("--match", default="", help="only workloads whose name contains this text")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SIDE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.steps)))
        return 0
    sys.path.insert(0, str(HERE))
    if not Path("/proc/self/clear_refs").exists():
        print("bench_memory.py needs Linux's /proc/self/clear_refs", file=sys.stderr)
        return 2
    from common import TORCH, cpu_name

    if TORCH is None:
        print("bench_memory.py compares with torch: pip install torch==2.13.0", file=sys.stderr)
        return 2
    from tqdm import tqdm

    groups = [g.strip() for g in a.only.split(",") if g.strip()]
    names = [n for n, (g, _) in _cases(groups).items() if a.match in n]
    results = {}
    for name in tqdm(names, desc="workloads", unit="workload"):
        r = {}
        for side in ("ours", "torch"):
            p = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--child", name, side],
                               capture_output=True, text=True, timeout=600)
            if p.returncode:
                raise SystemExit(f"{name} ({side}) failed:\n{p.stderr}")
            r[side] = json.loads(p.stdout.strip().splitlines()[-1])
        r["peak_ratio"] = r["ours"]["peak_mb"] / r["torch"]["peak_mb"]
        results[name] = r
    w = max([len(n) for n in results] + [8])
    print(f"\n{'workload':{w}s}  {'ours peak':>9s}  {'torch peak':>10s}  {'ratio':>5s}  {'ours steady':>11s}  "
          f"{'torch steady':>12s}  (MB above the pre-model resident set)")
    for n, r in results.items():
        print(f"{n:{w}s}  {r['ours']['peak_mb']:9.1f}  {r['torch']['peak_mb']:10.1f}  {r['peak_ratio']:5.2f}  "
              f"{r['ours']['steady_mb']:11.1f}  {r['torch']['steady_mb']:12.1f}")
    if results:
        ratios = [r["peak_ratio"] for r in results.values()]
        over = [n for n, r in results.items() if r["peak_ratio"] > 1.10]
        print(f"\npeak ours / torch: median {statistics.median(ratios):.2f}; {len(over)} of {len(ratios)} above "
              f"1.10" + (f" ({'; '.join(over)})" if over else ""))
    if a.json:
        import platform

        import numpy as np

        Path(a.json).write_text(json.dumps({
            "kind": "memory", "cpu": cpu_name(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": TORCH.__version__, "steps": a.steps, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
