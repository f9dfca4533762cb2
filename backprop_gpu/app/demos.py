"""The seed demonstrations: optimizers compared on one model, and their paths on 2-D surfaces.

Both run through the same engine and optimizers as everything else.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import optim
from . import models, rundir
from ..tape.mode import no_grad
from ..array import get_backend, manual_seed
from ..utils.data import DataLoader
from .data import load
from ..nn import functional as F
from ..tape.tensor import Tensor

#: (label, optimizer name, constructor kwargs, batch size)
COMPARISON = [
    ("SGD (mini-batch 32)", "sgd", dict(lr=0.1), 32),
    ("momentum", "sgd", dict(lr=0.05, momentum=0.9), 32),
    ("Nesterov", "sgd", dict(lr=0.05, momentum=0.9, nesterov=True), 32),
    ("Adagrad", "adagrad", dict(lr=0.05), 32),
    ("AdaDelta", "adadelta", dict(lr=1.0), 32),
    ("RMSprop", "rmsprop", dict(lr=1e-3), 32),
    ("Adam", "adam", dict(lr=3e-3), 32),
    ("AdamW", "adamw", dict(lr=3e-3, weight_decay=1e-2), 32),
    ("SGD, batch GD", "sgd", dict(lr=0.5), None),
    ("SGD, stochastic", "sgd", dict(lr=0.01), 1),
]


def compare_optimizers(out="runs/compare", epochs: int = 10, dataset: str = "digits", hidden=(64,),
                       device: str = "auto", seed: int = 0, log=print) -> list[dict]:
    """Train one model from one initialisation with each optimizer in :data:`COMPARISON`; plot test loss and
    accuracy against parameter updates and training time; print and return the results ranked.

    Each result holds the final ``test_loss``, ``test_accuracy``, ``updates`` and ``seconds`` and, per
    epoch, ``history`` (the same four, counted from the start), best first (see :func:`rank`)."""
    from .plots import optimizer_curves, widths_text

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {epochs!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"--seed must be an integer from 0 to {2 ** 32 - 1}, got {seed!r}")
    backend = get_backend(device)
    out = _output_dir(out)  # a file, or a directory that takes no file, found before ten trainings
    train_set, test_set = load(dataset)
    widths = (train_set.x.shape[1], *hidden, train_set.num_classes)
    manual_seed(seed)
    init = models.mlp(train_set.x.shape[1], train_set.num_classes, hidden).to(backend).state_dict()
    init = {k: v.numpy() for k, v in init.items()}
    test = DataLoader(test_set, None, device=backend)
    results = []
    for label, name, kwargs, bs in COMPARISON:
        model = models.mlp(train_set.x.shape[1], train_set.num_classes, hidden).to(backend)
        model.load_state_dict(init)
        opt = optim.OPTIMIZERS[name](model.parameters(), **kwargs)
        loader = DataLoader(train_set, bs, shuffle=True, seed=seed, device=backend)
        _warm_up(train_set, hidden, name, kwargs, bs, backend)  # kernels compiled before the clock starts
        history = {"updates": [], "seconds": [], "test_loss": [], "test_accuracy": []}
        updates, seconds = 0, 0.0
        for _ in range(epochs):
            t0 = time.perf_counter()
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
                updates += 1
            backend.synchronize()
            seconds += time.perf_counter() - t0  # training only: the evaluation below is left out
            with no_grad():
                (x, y), = list(test)
                pred = model(x)
                history["test_loss"].append(F.cross_entropy(pred, y).item())
                history["test_accuracy"].append(float((pred.argmax(axis=1).numpy() == y.numpy()).mean()))
            history["updates"].append(updates)
            history["seconds"].append(seconds)
        results.append({"optimizer": label, **{k: v[-1] for k, v in history.items()}, "history": history})
        log(f"  {label:20s} test accuracy {100 * history['test_accuracy'][-1]:5.1f}%  "
            f"loss {history['test_loss'][-1]:.4f}  {updates:6,d} updates  {seconds:5.1f}s")
    path = out / "compare_optimizers.png"
    optimizer_curves({r["optimizer"]: r["history"] for r in results}, path,
                     f"MLP {widths_text(widths)} on {dataset}: same initialisation, {epochs} epoch"
                     f"{'s' if epochs > 1 else ''} each")
    results = rank(results)
    log(f"\n{'rank':>4}  {'optimizer':20s} {'accuracy':>8}  {'test loss':>9}  {'updates':>7}  {'time':>6}")
    for i, r in enumerate(results, 1):
        log(f"{i:4d}  {r['optimizer']:20s} {100 * r['test_accuracy']:7.1f}%  {r['test_loss']:9.4f}  "
            f"{r['updates']:7,d}  {r['seconds']:5.1f}s")
    log(f"plot: {path}")
    return results


def _warm_up(train_set, hidden, name: str, kwargs: dict, bs, backend) -> None:
    """One step of a throwaway copy of a comparison run: its kernels (compiled on first use, a good part of a
    second on Numba) load before its training time is measured, and the run itself is left untouched."""
    model = models.mlp(train_set.x.shape[1], train_set.num_classes, hidden).to(backend)
    opt = optim.OPTIMIZERS[name](model.parameters(), **kwargs)
    x, y = next(iter(DataLoader(train_set, bs, device=backend)))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    backend.synchronize()


def rank(results: list[dict]) -> list[dict]:
    """``results`` best first: by test accuracy, ties (equal accuracy) broken by the lower test loss."""
    return sorted(results, key=lambda r: (-r["test_accuracy"], r["test_loss"]))


def _output_dir(out) -> Path:
    """``out`` made (if need be) and proved writable, else ``ValueError`` naming it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise rundir.RunDirError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise rundir.RunDirError(f"cannot create --out {out}: {e.strerror or e}") from None
    rundir.probe(out)
    return out


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y * y * y) ** 2


def _saddle(x, y):
    return x * x - y * y


def _valley(x, y):
    return 0.5 * (x * x + 20 * y * y)


#: (label, optimizer name, constructor kwargs but lr)
PATH_OPTIMIZERS = [
    ("SGD", "sgd", {}), ("momentum", "sgd", dict(momentum=0.9)), ("Nesterov", "sgd", dict(momentum=0.9, nesterov=True)),
    ("Adagrad", "adagrad", {}), ("AdaDelta", "adadelta", {}), ("RMSprop", "rmsprop", {}), ("Adam", "adam", {}),
    ("AdamW", "adamw", dict(weight_decay=0.01)),
]
#: name, function (works on numpy arrays and on tensors), start, view, minimum, lr per optimizer. The lrs were
#: picked by eye from 500-step paths over a sweep of lrs about 1.5-3x apart, per surface, for each optimizer's
#: characteristic behaviour: SGD the largest lr whose path stays smooth (or, on the valley, zig-zags across it);
#: momentum SGD's lr or twice it, where it overshoots; Nesterov the same lr as momentum where that stays smooth
#: (on Rosenbrock it does not: 7e-4, the largest that does, as it damps the early swings); the adaptive methods
#: the lr where their path is steady (Adam's even steps towards Rosenbrock's minimum) or shows their trait
#: (Adagrad's shrinking steps; the saddle left at once, its tiny gradient scaled up).
SURFACES = [
    ("Rosenbrock", _rosenbrock, (-1.5, 2.0), ((-2, 2), (-1, 3)), (1, 1),
     dict(SGD=1e-3, momentum=2e-3, Nesterov=7e-4, Adagrad=0.5, AdaDelta=5.0, RMSprop=0.01, Adam=0.1, AdamW=0.1)),
    ("Beale", _beale, (1.0, 1.5), ((-0.5, 4), (-1, 2)), (3, 0.5),
     dict(SGD=0.01, momentum=1e-3, Nesterov=1e-3, Adagrad=0.3, AdaDelta=3.0, RMSprop=0.01, Adam=0.03, AdamW=0.03)),
    ("saddle x\u00b2 - y\u00b2", _saddle, (-1.5, 1e-3), ((-2, 2), (-2, 2)), None,
     dict(SGD=0.01, momentum=0.01, Nesterov=0.01, Adagrad=0.3, AdaDelta=3.0, RMSprop=0.01, Adam=0.03, AdamW=0.03)),
    ("elongated valley", _valley, (-4.0, 1.0), ((-5, 5), (-1.5, 1.5)), (0, 0),
     dict(SGD=0.09, momentum=0.01, Nesterov=0.01, Adagrad=1.0, AdaDelta=3.0, RMSprop=0.03, Adam=0.1, AdamW=0.1)),
]


def trace_path(f, start, opt_name: str, lr: float, kwargs: dict, steps: int, view, limit: float = 1e3) -> dict:
    """One optimizer's trajectory on ``f`` from ``start``: up to ``steps`` steps, stopped early when it
    diverges (a coordinate turns non-finite or beyond ``limit``).

    Returns ``{"xs", "ys"`` (the finite points, start included), ``"lr"``, ``"steps"`` (steps taken),
    ``"diverged"``, ``"left_view_at"}``: the step from which the path stays outside ``view`` ((xlim, ylim)),
    None when it ends inside."""
    p = Tensor(np.array(start, dtype=np.float64), device="numpy", requires_grad=True)
    opt = optim.OPTIMIZERS[opt_name]([p], lr=lr, **kwargs)
    trace, taken, diverged = [np.array(start, dtype=np.float64)], 0, False
    for _ in range(steps):
        opt.zero_grad()
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is a divergence, reported below
            f(p[0], p[1]).backward()
            opt.step()
        taken += 1
        xy = p.numpy().copy()
        if np.isfinite(xy).all():
            trace.append(xy)  # a point far outside still shows the direction it left in
        if not np.isfinite(xy).all() or np.abs(xy).max() > limit:
            diverged = True
            break
    tr = np.array(trace)
    (x0, x1), (y0, y1) = view
    inside = (tr[:, 0] >= x0) & (tr[:, 0] <= x1) & (tr[:, 1] >= y0) & (tr[:, 1] <= y1)
    left = None
    if not inside[-1]:
        left = int(np.flatnonzero(inside)[-1]) + 1 if inside.any() else 0
    return {"xs": tr[:, 0], "ys": tr[:, 1], "lr": lr, "steps": taken, "diverged": diverged, "left_view_at": left}


def optimizer_paths(out="runs/paths", steps: int = 500, log=print, surfaces=None) -> list[dict]:
    """Each optimizer's trajectory over four 2-D loss surfaces (``surfaces``: rows like :data:`SURFACES`'s),
    from the same start, on contour plots; returns the panels drawn (see :func:`plots.contour_paths`)."""
    from .plots import contour_paths, path_status

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    out = _output_dir(out)
    panels = []
    for name, f, start, view, minimum, lrs in SURFACES if surfaces is None else surfaces:
        paths = {}
        for label, opt_name, kwargs in PATH_OPTIMIZERS:
            p = paths[label] = trace_path(f, start, opt_name, lrs[label], kwargs, steps, view)
            x, y = p["xs"][-1], p["ys"][-1]
            status = path_status(p, steps) or f"ran {p['steps']} steps"
            log(f"  {name:17s} {label:9s} lr {lrs[label]:<7g} f = {f(x, y):<10.4g} at ({x:.3f}, {y:.3f}): {status}")
        panels.append({"name": name, "f": f, "xlim": view[0], "ylim": view[1], "start": start,
                       "minimum": minimum, "paths": paths})
    path = out / "optimizer_paths.png"
    contour_paths(panels, path, f"optimizer trajectories: {steps} steps each from the same start unless noted "
                  f"(marker every {max(1, steps // 10)} steps); lr picked per optimizer and surface", steps)
    log(f"plot: {path}")
    return panels
