"""Same-process, interleaved comparisons against PyTorch: the robust ratios.

pytest-benchmark times each row in its own block of rounds, minutes apart on a
machine whose speed drifts (this 2-core VM's memory bandwidth moves by ±30%).
Here every workload's implementations alternate within one process, each
timed call preceded by one untimed call of the same implementation (so thread
pools and caches are in that implementation's steady state, not the other's),
and the ratio is taken pair by pair. The median of those ratios and their
interquartile range are what the targets are judged on.

The workloads (``workloads_broad.py``) run the same computation on both sides
from the same weights and inputs, and each is cross-checked against torch at
set-up; one that disagrees is reported as failed, with no time.

usage: python benchmarks/interleaved.py [--pairs N] [--quick] [--budget S] [--only GROUP,...] [--match TEXT]
                                        [--profile STEPS] [--json PATH]
       groups: tape, mlp, cnn, transformer, embedding, lstm, ops, optim
       (needs torch==2.13.0; threads as in common.py)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import THREADS, TORCH, cpu_name  # noqa: E402 - sets thread counts before NumPy, Numba and torch start

import numpy as np  # noqa: E402

import backprop_gpu as bg  # noqa: E402
import bench_tape  # noqa: E402
import workloads_broad as wb  # noqa: E402


def _tape_cases():
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
        ours()
        theirs()
        for g, tg in ((a.grad, ta.grad), (b.grad, tb.grad)):
            wb._close(name, g, tg, 1e-5, 1e-6)
        cases[name] = {"ours": ours, "torch": theirs}
    return cases


#: group -> {workload: impls, or a builder returning them (built, cross-checked and timed one at a time)}
CASES = {"tape": _tape_cases, "mlp": wb.mlp_cases, "cnn": wb.cnn_cases, "transformer": wb.transformer_cases,
         "embedding": wb.embedding_cases, "lstm": wb.lstm_cases, "ops": wb.ops_cases, "optim": wb.optim_cases}


def measure(impls: dict, pairs: int, sample_s: float = 2e-3, budget_s: float | None = None,
            min_pairs: int = 10) -> dict:
    """Median time of each implementation and the median and IQR of ours / each other one.

    Each sample times enough back-to-back calls to last about ``sample_s`` (one call for a
    training step, hundreds for a tiny graph, whose single calls jitter by more than the
    difference being measured). With ``budget_s``, a workload whose pairs would take longer
    than that runs fewer of them (not fewer than ``min_pairs``)."""
    reps, cost = {}, 0.0
    for k, f in impls.items():  # compile, allocate, fill caches; then size the samples
        for _ in range(3):
            f()
        t = time.perf_counter()
        f()
        dt = max(time.perf_counter() - t, 1e-9)
        reps[k] = max(1, int(sample_s / dt))
        cost += (reps[k] + 1) * dt  # one pair: the untimed call and the timed sample
    if budget_s is not None:
        pairs = max(min(pairs, min_pairs), min(pairs, int(budget_s / cost)))
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


def _profile(impl, steps: int, top: int = 12) -> str:
    """cProfile of ``steps`` calls of one implementation: the functions with most own time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        impl()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=40, help="interleaved repeats per workload")
    p.add_argument("--quick", action="store_true", help="8 pairs per workload (4 for optimizers): a smoke run")
    p.add_argument("--only", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    p.add_argument("--budget", type=float, default=20.0, metavar="SECONDS",
                   help="time a slow workload with fewer pairs (at least 10) so it takes about this long")
    p.add_argument("--match", default=None, help="only workloads whose name contains this text")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, print a cProfile of STEPS of our implementation per workload")
    p.add_argument("--json", default=None, help="write the results here (benchmarks/report.py renders them)")
    args = p.parse_args(argv)
    if TORCH is None:
        print("torch is not installed: pip install torch==2.13.0", file=sys.stderr)
        return 2
    unknown = set(args.only.split(",")) - set(CASES)
    if unknown:
        p.error(f"unknown group(s) {', '.join(sorted(unknown))}; groups are {', '.join(CASES)}")
    pairs = 8 if args.quick else args.pairs
    results, start, load_start = {}, time.perf_counter(), os.getloadavg()
    for group in args.only.split(","):
        cases = CASES[group]()
        if not cases:
            print(f"[{group}] no workloads (the layer it needs is missing)", flush=True)
        for workload, impls in cases.items():
            if args.match and args.match not in workload:
                continue
            t0 = time.perf_counter()
            try:
                impls = impls() if callable(impls) else impls
            except wb.CheckError as e:  # a broken workload reports no time
                results[workload] = {"group": group, "error": str(e)}
                print(f"{workload}\n    CROSS-CHECK FAILED: {e}", flush=True)
                continue
            # optimizer steps move 10M parameters; fewer pairs keep the run short
            n = pairs if group != "optim" else max(4 if args.quick else 10, pairs // 4)
            r = measure(impls, n, budget_s=args.budget, min_pairs=min(n, 10))
            r["group"], r["seconds"] = group, round(time.perf_counter() - t0, 1)
            results[workload] = r
            ratios = "  ".join(f"ours/{k} {v['median']:.3f} (IQR {v['q25']:.3f}-{v['q75']:.3f})"
                               for k, v in r["ratios"].items())
            medians = "  ".join(f"{k} {v * 1e3:.3f} ms" for k, v in r["median_s"].items())
            print(f"{workload}\n    {medians}\n    {ratios}   [{r['seconds']} s]", flush=True)
            if args.profile:
                print(_profile(impls["ours"], args.profile), flush=True)
            del impls
            gc.collect()  # the optimizer group holds ~200 MB per workload
    ok = [r["ratios"]["torch"]["median"] for r in results.values() if "ratios" in r]
    if ok:
        above = [w for w, r in results.items() if "ratios" in r and r["ratios"]["torch"]["median"] > 1.0]
        print(f"\n{len(ok)} workloads in {time.perf_counter() - start:.0f} s; median ours/torch {np.median(ok):.3f}; "
              f"{len(above)} above 1.0x torch", flush=True)
    if args.json:
        meta = {"kind": "interleaved", "datetime": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": int(THREADS),
                "torch": TORCH.__version__, "numpy": np.__version__, "python": platform.python_version(),
                "cpu": cpu_name(), "cores": os.cpu_count(),
                # a shared machine: how busy it was (1-minute load average) when the run began and ended
                "loadavg": [round(load_start[0], 2), round(os.getloadavg()[0], 2)], "results": results}
        Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
