"""Same-process, interleaved comparisons against PyTorch: the robust ratios.

pytest-benchmark times each row in its own block of rounds, minutes apart on a
machine whose speed drifts (this 2-core VM's memory bandwidth moves by ±30%).
Here every workload's implementations alternate within one process, each
timed call preceded by one untimed call of the same implementation (so thread
pools and caches are in that implementation's steady state, not the other's),
and the ratio is taken pair by pair. The median of those ratios and their
interquartile range are what the targets are judged on.

usage: python benchmarks/interleaved.py [--pairs N] [--only tape,mlp,cnn,optim] [--json PATH]
       (needs torch==2.13.0; threads as in common.py)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import THREADS, TORCH  # noqa: E402 - sets thread counts before NumPy, Numba and torch start

import numpy as np  # noqa: E402

import backprop_gpu as bg  # noqa: E402
import bench_cnn  # noqa: E402
import bench_mlp  # noqa: E402
import bench_optim  # noqa: E402
import bench_tape  # noqa: E402
from backprop_gpu import optim  # noqa: E402


def _tape_cases():
    x, y = bench_tape.tiny_inputs(4)
    cases = {}
    for name, n, fn in (("tape: (a*b+a).sum() fwd+bwd, (4,)", 4, lambda a, b: (a * b + a).sum()),
                        ("tape: 20-op elementwise chain fwd+bwd, (64,)", 64, bench_tape.chain)):
        x, y = bench_tape.tiny_inputs(n)
        a, b = (bg.tensor(v, device="numba", requires_grad=True) for v in (x, y))
        ta, tb = (TORCH.tensor(v, requires_grad=True) for v in (x, y))

        def ours(a=a, b=b, fn=fn):
            a.grad = b.grad = None
            fn(a, b).backward()

        def theirs(a=ta, b=tb, fn=fn):
            a.grad = b.grad = None
            fn(a, b).backward()
        cases[name] = {"ours": ours, "torch": theirs}
    return cases


def _mlp_case():
    return {bench_mlp.WORKLOAD: {"ours": bench_mlp.step_ours("numba"), "torch": bench_mlp.step_torch("cpu"),
                                 "floor": bench_mlp.step_matmul_floor()}}


def _cnn_case():
    return {bench_cnn.WORKLOAD: {"ours": bench_cnn.step_ours("numba"), "torch": bench_cnn.step_torch()}}


def _optim_cases():
    cases = {}
    for name, layout, fused in (("adam", "1 tensor", True), ("adam", "200 tensors", True),
                                ("rmsprop", "1 tensor", False), ("adadelta", "1 tensor", False)):
        sizes = bench_optim.LAYOUTS[layout]
        ours = optim.OPTIMIZERS[name](bench_optim.params_for("numba", sizes), **bench_optim.OPTIMIZERS[name])
        theirs = bench_optim.torch_optimizer(name, sizes, "fused" if fused else "default")
        cases[bench_optim.workload(name, layout)] = {"ours": ours.step, "torch": theirs.step}
    return cases


def _cpu_name() -> str:
    try:
        import cpuinfo  # py-cpuinfo, which pytest-benchmark brings

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.machine()
    except Exception:  # noqa: BLE001 - a name for the report only
        return platform.processor() or platform.machine()


CASES = {"tape": _tape_cases, "mlp": _mlp_case, "cnn": _cnn_case, "optim": _optim_cases}


def measure(impls: dict, pairs: int, sample_s: float = 2e-3) -> dict:
    """Median time of each implementation and the median and IQR of ours / each other one.

    Each sample times enough back-to-back calls to last about ``sample_s`` (one call for a
    training step, hundreds for a tiny graph, whose single calls jitter by more than the
    difference being measured)."""
    reps = {}
    for k, f in impls.items():  # compile, allocate, fill caches; then size the samples
        for _ in range(3):
            f()
        t = time.perf_counter()
        f()
        reps[k] = max(1, int(sample_s / max(time.perf_counter() - t, 1e-9)))
    times = {k: [] for k in impls}
    names = list(impls)
    for i in range(pairs):
        for k in names[i % len(names):] + names[:i % len(names)]:
            f, n = impls[k], reps[k]
            f()  # untimed: the steady state of this implementation
            t = time.perf_counter()
            for _ in range(n):
                f()
            times[k].append((time.perf_counter() - t) / n)
    t = {k: np.array(v) for k, v in times.items()}
    out = {"median_s": {k: float(np.median(v)) for k, v in t.items()}, "pairs": pairs, "ratios": {}}
    for k in names:
        if k != "ours":
            r = t["ours"] / t[k]
            out["ratios"][k] = {"median": float(np.median(r)), "q25": float(np.percentile(r, 25)),
                                "q75": float(np.percentile(r, 75))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=60, help="interleaved repeats per workload")
    p.add_argument("--only", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    p.add_argument("--json", default=None, help="write the results here (benchmarks/report.py renders them)")
    args = p.parse_args(argv)
    if TORCH is None:
        print("torch is not installed: pip install torch==2.13.0", file=sys.stderr)
        return 2
    results = {}
    for group in args.only.split(","):
        for workload, impls in CASES[group]().items():
            # optimizer steps move 10M parameters; fewer pairs keep the run short
            r = measure(impls, args.pairs if group != "optim" else max(10, args.pairs // 4))
            results[workload] = r
            ratios = "  ".join(f"ours/{k} {v['median']:.3f} (IQR {v['q25']:.3f}-{v['q75']:.3f})"
                               for k, v in r["ratios"].items())
            medians = "  ".join(f"{k} {v * 1e3:.3f} ms" for k, v in r["median_s"].items())
            print(f"{workload}\n    {medians}\n    {ratios}", flush=True)
    if args.json:
        meta = {"kind": "interleaved", "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": int(THREADS),
                "torch": TORCH.__version__, "numpy": np.__version__, "python": platform.python_version(),
                "cpu": _cpu_name(), "results": results}
        Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
