"""``backprop-gpu selftest``: every backend here checked against the NumPy reference, and with
``--bench`` the measurements a GPU run needs, as JSON plus a markdown table.

Checks (default): a conv/pool/linear/loss graph's loss and gradients in float64, the fused
row and activation ops (LayerNorm, softmax, log-softmax, GELU) likewise, the random streams
(one seed's uniforms, normals, integers, permutation and dropout mask), every optimizer's first
steps, and a short training run on the bundled digits, each on every available backend against
the ``numpy`` backend.

Bench (``--bench``): device-to-device copy bandwidth, every optimizer step on 10M and 100M
float32 parameters as 1 and as 200 tensors (torch ``fused=True`` beside it where torch has it
on that device), and the 784-1024-1024-10 MLP step at batch 256 and 1024 against torch eager,
with fused-kernel launches and host time per step. ``--scale`` shrinks every size, so the bench
half can be run (and tested) on a CPU.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from .. import optim
from ..array import available_backends, get_backend, manual_seed
from ..nn import functional as F
from ..ops import conv2d, max_pool2d, tensor
from . import models

REFERENCE = "numpy"

# -- checks ---------------------------------------------------------------------------------------


def _graph_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = max_pool2d(conv2d(x, w1, b1, padding=1).relu(), 2)
    return F.cross_entropy(F.linear(h.flatten(1).tanh(), w2, b2), y)


def _graph_inputs(backend):
    rng = np.random.default_rng(0)
    shapes = ((4, 1, 3, 3), (4,), (5, 64), (5,))
    params = [tensor(rng.standard_normal(s) * 0.5, device=backend, requires_grad=True) for s in shapes]
    x = tensor(rng.standard_normal((6, 1, 8, 8)), device=backend)
    y = tensor(rng.integers(0, 5, 6), device=backend)
    return params, x, y


def _graph(backend) -> list[np.ndarray]:
    """The loss and every parameter's gradient of a small float64 conv net."""
    params, x, y = _graph_inputs(backend)
    loss = _graph_loss(params, x, y)
    loss.backward()
    return [loss.numpy()] + [p.grad.numpy() for p in params]


def _fused_ops(backend) -> list[np.ndarray]:
    """The output and input gradients, in float64, of a graph through the fused row and activation
    ops: LayerNorm, softmax, log-softmax and both GELU forms."""
    from ..nn.functional import gelu, layer_norm, log_softmax, softmax

    rng = np.random.default_rng(2)
    x = tensor(rng.standard_normal((6, 16)) * 2, device=backend, requires_grad=True)
    w = tensor(rng.standard_normal(16), device=backend, requires_grad=True)
    b = tensor(rng.standard_normal(16), device=backend, requires_grad=True)
    h = layer_norm(x, (16,), w, b)
    out = (softmax(gelu(h), dim=-1) * log_softmax(gelu(h, approximate="tanh"), dim=-1)).sum()
    out.backward()
    return [out.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()]


def _random_streams(backend) -> list[np.ndarray]:
    """Draws after one seed: uniforms, normals, integers, a permutation and dropout masks (alone, and
    fused after a Linear and ReLU), which are the same numbers on every backend (normals to an ulp)."""
    from ..nn.functional import dropout, linear_relu
    from ..ops import rand, randint, randn, randperm

    manual_seed(0)
    ones = tensor(np.ones((10, 100)), device=backend)
    draws = [rand(1000, device=backend), randn(1000, device=backend), randint(0, 1000, (1000,), device=backend),
             randperm(100, device=backend), dropout(ones, 0.3),
             linear_relu(ones, tensor(np.eye(100), device=backend), dropout=0.3)]
    return [d.numpy().astype(np.float64) for d in draws]


def _optimizer_steps(backend, name: str, steps: int = 3) -> list[np.ndarray]:
    """Parameters of three tensors after ``steps`` steps of optimizer ``name`` with fixed gradients."""
    rng = np.random.default_rng(1)
    shapes = ((7,), (3, 4), (5,))
    params = [tensor(rng.standard_normal(s).astype(np.float32), device=backend, requires_grad=True) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]
    opt = optim.OPTIMIZERS[name](params, lr=0.01, weight_decay=0.01)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = tensor(g, device=backend)
        opt.step()
    return [p.numpy() for p in params]


def _training(backend, epochs: int = 3) -> list[np.ndarray]:
    """Per-epoch mean training loss and the final test accuracy of a digits MLP (float32)."""
    from .data.datasets import digits

    train, test = digits()
    manual_seed(0)
    model = models.mlp(64, 10, (32,)).to(backend)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = tensor(train.x, device=backend), tensor(train.y, device=backend)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(train), 64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            opt.step()
            total += loss.item() * min(64, len(train) - i)
        losses.append(total / len(train))
    pred = model(tensor(test.x, device=backend)).argmax(1).numpy()
    return [np.array(losses), np.array([(pred == test.y).mean()])]


#: name: (what it computes, relative tolerance against the reference)
CHECKS = {
    "graph": (_graph, 1e-10),
    "fused ops": (_fused_ops, 1e-10),
    "random streams": (_random_streams, 1e-6),
    **{f"optim {n}": ((lambda b, n=n: _optimizer_steps(b, n)), 1e-5) for n in optim.OPTIMIZERS},
    "training": (_training, 1e-2),  # float32 training: losses and accuracy drift a little by backend
}


def _max_rel_err(got, want) -> float:
    err = 0.0
    for g, w in zip(got, want):
        scale = np.maximum(np.abs(w), 1e-3)
        err = max(err, float(np.max(np.abs(np.asarray(g, np.float64) - w) / scale)) if np.size(w) else 0.0)
    return err


def _usable(backends) -> list[str]:
    """``backends`` as a list, each one known and usable here, else a ValueError naming it and why."""
    from ..array.registry import BACKENDS, backend_availability

    for name in backends or ():
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; the backends are {', '.join(BACKENDS)}")
        why = backend_availability(name)
        if why:
            raise ValueError(f"backend {name!r} is not usable here: {why}")
    return list(backends or ())


def run_checks(backends=None, progress: bool = True, checks=None) -> list[dict]:
    """Run every check (or those named in ``checks``) on every backend in ``backends`` (default:
    all available) and on the reference; one row per (check, backend) with its largest relative
    error and the verdict."""
    from tqdm import tqdm

    names = _usable(backends) or available_backends()
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    rows = []
    todo = {k: v for k, v in CHECKS.items() if checks is None or k in checks}
    for check, (fn, rtol) in tqdm(todo.items(), desc="selftest", unit="check", disable=not progress):
        ref = fn(get_backend(REFERENCE))
        for name in names:
            if name == REFERENCE:
                continue
            try:
                err = _max_rel_err(fn(get_backend(name)), ref)
                ok, note = err <= rtol, ""
            except Exception as e:  # noqa: BLE001 - a failing backend is a result, not a crash
                err, ok, note = float("nan"), False, f"{type(e).__name__}: {e}"
            rows.append({"check": check, "backend": name, "max_rel_err": err, "rtol": rtol, "ok": bool(ok),
                         "note": note})
    return rows


# -- bench ----------------------------------------------------------------------------------------


def _timed(fn, backend, repeats: int) -> tuple[float, float]:
    """Median seconds per call, with the device synchronised after each, and the median host
    time (before the synchronisation: what launching costs the CPU)."""
    fn()
    backend.synchronize()
    total, host = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        backend.synchronize()
        total.append(time.perf_counter() - t0)
        host.append(t1 - t0)
    return float(np.median(total)), float(np.median(host))


def _copy_bandwidth(backend, n: int, repeats: int) -> dict:
    src = backend.xp.ones(n, dtype=np.float32)
    dst = backend.xp.empty_like(src)

    def copy():
        dst[...] = src
    t, _ = _timed(copy, backend, repeats)
    return {"bench": "copy", "backend": backend.name, "elements": n, "seconds": t,
            "gb_per_s": 2 * 4 * n / t / 1e9}


def _torch_device(backend):
    try:
        import torch
    except ImportError:
        return None, None
    if backend.device.type == "cuda":
        if not torch.cuda.is_available():
            return None, None
        return torch, torch.device(f"cuda:{backend.device.index or 0}")
    return torch, torch.device("cpu")


def _torch_sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _optimizer_bench(backend, name: str, n: int, tensors: int, repeats: int, copy_gbs: float | None) -> dict:
    rng = np.random.default_rng(0)
    sizes = [n // tensors] * tensors
    params = [tensor(rng.standard_normal(s, dtype=np.float32), device=backend, requires_grad=True) for s in sizes]
    for p in params:
        p.grad = tensor(rng.standard_normal(p.numel(), dtype=np.float32) * 0.01, device=backend)
    opt = optim.OPTIMIZERS[name](params, lr=1e-3)
    launches = backend.launch_count
    opt.step()
    launches = backend.launch_count - launches
    t, host = _timed(opt.step, backend, repeats)
    row = {"bench": "optimizer", "optimizer": name, "backend": backend.name, "parameters": n, "tensors": tensors,
           "seconds": t, "host_seconds": host, "launches_per_step": launches}
    # bytes moved per step: parameter read and written, gradient read, each state read and written
    n_states = sum(1 for k in opt.state_dict()["state"][0] if k != "step")
    row["gb_per_s"] = 4 * n * (3 + 2 * n_states) / t / 1e9
    if copy_gbs:
        row["fraction_of_copy_bandwidth"] = row["gb_per_s"] / copy_gbs
    torch, dev = _torch_device(backend)
    names = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad"}
    if torch is not None and name in names:
        g = torch.Generator().manual_seed(0)
        tp = [torch.randn(s, generator=g).to(dev).requires_grad_() for s in sizes]
        for p in tp:
            p.grad = torch.randn(p.numel(), generator=g).to(dev) * 0.01
        try:
            topt = getattr(torch.optim, names[name])(tp, lr=1e-3, fused=True)
            topt.step()
            _torch_sync(torch, dev)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                topt.step()
                _torch_sync(torch, dev)
                times.append(time.perf_counter() - t0)
            row["torch_fused_seconds"] = float(np.median(times))
            row["ours_over_torch"] = t / row["torch_fused_seconds"]
        except (RuntimeError, TypeError) as e:  # torch has no fused form for this device
            row["torch_note"] = str(e).splitlines()[0]
    return row


def _mlp_bench(backend, batch: int, repeats: int, widths=(784, 1024, 1024, 10)) -> dict:
    rng = np.random.default_rng(0)
    xn = rng.random((batch, widths[0]), dtype=np.float32)
    yn = rng.integers(0, widths[-1], batch)
    manual_seed(0)
    model = models.mlp(widths[0], widths[-1], widths[1:-1]).to(backend)
    opt = optim.SGD(model.parameters(), lr=0.01)
    x, y = tensor(xn, device=backend), tensor(yn, device=backend)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    launches = backend.launch_count
    step()
    launches = backend.launch_count - launches
    t, host = _timed(step, backend, repeats)
    row = {"bench": "mlp", "backend": backend.name, "batch": batch, "widths": list(widths), "seconds": t,
           "host_seconds": host, "fused_launches_per_step": launches}
    torch, dev = _torch_device(backend)
    if torch is not None:
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        tm = torch.nn.Sequential(*layers).to(dev)
        topt = torch.optim.SGD(tm.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(xn).to(dev), torch.from_numpy(yn).to(dev)

        def tstep():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            topt.step()
        tstep()
        _torch_sync(torch, dev)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tstep()
            _torch_sync(torch, dev)
            times.append(time.perf_counter() - t0)
        row["torch_seconds"] = float(np.median(times))
        row["ours_over_torch"] = t / row["torch_seconds"]
    return row


def run_bench(backends=None, scale: float = 1.0, repeats: int = 10, progress: bool = True) -> list[dict]:
    """The bench rows for every backend in ``backends`` (default: the GPU ones available, else
    every available one); sizes are multiplied by ``scale``."""
    from tqdm import tqdm

    avail = available_backends()
    names = _usable(backends) or [n for n in avail if get_backend(n).device.type == "cuda"] or avail
    jobs = []
    for name in names:
        b = get_backend(name)
        jobs.append(("copy", b, None))
        for n in (10_000_000, 100_000_000):
            for k in (1, 200):
                for opt_name in optim.OPTIMIZERS:
                    jobs.append(("optimizer", b, (opt_name, max(int(n * scale) // k * k, k), k)))
        for batch in (256, 1024):
            jobs.append(("mlp", b, (max(int(batch * min(scale, 1.0)), 8),)))
    rows, copy_gbs = [], {}
    for kind, b, args in tqdm(jobs, desc="selftest --bench", unit="run", disable=not progress):
        if kind == "copy":
            row = _copy_bandwidth(b, max(int(100_000_000 * scale), 1024), repeats)
            copy_gbs[b.name] = row["gb_per_s"]
        elif kind == "optimizer":
            row = _optimizer_bench(b, *args, repeats=repeats, copy_gbs=copy_gbs.get(b.name))
        else:
            row = _mlp_bench(b, *args, repeats=repeats)
        rows.append(row)
    return rows


# -- report ---------------------------------------------------------------------------------------


def machine() -> dict:
    """What ran it: host, Python, NumPy, and the GPU's name where CuPy sees one."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "processor": platform.processor() or platform.machine()}
    try:
        import cupy

        if cupy.is_available():
            props = cupy.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:  # noqa: BLE001 - no GPU is an answer, not an error
        pass
    return info


def markdown(checks: list[dict], bench: list[dict], info: dict) -> str:
    """A short report: the machine, the checks, the bench rows."""
    lines = [f"# backprop-gpu selftest on {info.get('gpu', info['processor'])}", "",
             f"{info['platform']}, Python {info['python']}, NumPy {info['numpy']}", ""]
    if checks:
        lines += ["| check | backend | max rel. error | tolerance | result |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['check']} | {r['backend']} | {r['max_rel_err']:.2e} | {r['rtol']:.0e} | "
                  f"{'ok' if r['ok'] else 'FAILED ' + r['note']} |" for r in checks]
        lines.append("")
    if bench:
        lines += ["| bench | backend | size | ms | host ms | launches | vs torch |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in bench:
            size = {"copy": lambda: f"{r['elements']:,} f32 ({r['gb_per_s']:.0f} GB/s)",
                    "optimizer": lambda: f"{r['optimizer']} {r['parameters']:,} as {r['tensors']}",
                    "mlp": lambda: f"batch {r['batch']}"}[r["bench"]]()
            launches = r.get("launches_per_step", r.get("fused_launches_per_step", ""))
            ratio = f"{r['ours_over_torch']:.2f}x" if "ours_over_torch" in r else ""
            host = f"{r['host_seconds'] * 1e3:.3f}" if "host_seconds" in r else ""
            lines.append(f"| {r['bench']} | {r['backend']} | {size} | {r['seconds'] * 1e3:.3f} | {host} | "
                         f"{launches} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(bench: bool = False, out=None, backends=None, scale: float = 1.0, repeats: int = 10,
         progress: bool = True, log=print) -> int:
    """Run the checks (and with ``bench`` the measurements); write ``selftest.json`` and
    ``selftest.md`` into ``out`` when given. Returns 0 when every check passed, else 1."""
    info = machine()
    checks = run_checks(backends, progress=progress)
    rows = run_bench(backends, scale=scale, repeats=repeats, progress=progress) if bench else []
    report = markdown(checks, rows, info)
    log(report)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "selftest.json").write_text(json.dumps({"machine": info, "checks": checks, "bench": rows}, indent=1))
        (out / "selftest.md").write_text(report)
        log(f"wrote {out / 'selftest.json'} and {out / 'selftest.md'}")
    failed = [r for r in checks if not r["ok"]]
    return 1 if failed else 0


__all__ = ["run_checks", "run_bench", "markdown", "machine", "main", "CHECKS"]
