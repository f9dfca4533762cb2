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
    """Train one model from one initialisation with each optimizer; plot test loss per epoch; rank them."""
    from .plots import loss_curves

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {epochs!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"--seed must be an integer from 0 to {2 ** 32 - 1}, got {seed!r}")
    backend = get_backend(device)
    out = _output_dir(out)  # a file, or a directory that takes no file, found before ten trainings
    train_set, test_set = load(dataset)
    manual_seed(seed)
    init = models.mlp(train_set.x.shape[1], train_set.num_classes, hidden).to(backend).state_dict()
    init = {k: v.numpy() for k, v in init.items()}
    test = DataLoader(test_set, None, device=backend)
    curves, results = {}, []
    for label, name, kwargs, bs in COMPARISON:
        model = models.mlp(train_set.x.shape[1], train_set.num_classes, hidden).to(backend)
        model.load_state_dict(init)
        opt = optim.OPTIMIZERS[name](model.parameters(), **kwargs)
        loader = DataLoader(train_set, bs, shuffle=True, seed=seed, device=backend)
        t0, losses = time.perf_counter(), []
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
            with no_grad():
                (x, y), = list(test)
                pred = model(x)
                losses.append(F.cross_entropy(pred, y).item())
                acc = float((pred.argmax(axis=1).numpy() == y.numpy()).mean())
        curves[label] = losses
        results.append({"optimizer": label, "test_loss": losses[-1], "test_accuracy": acc,
                        "seconds": time.perf_counter() - t0})
        log(f"  {label:20s} test loss {losses[-1]:.4f}  accuracy {100 * acc:5.1f}%")
    loss_curves(curves, out / "compare_optimizers.png",
                f"MLP {hidden} on {dataset}, same initialisation, {epochs} epochs", xlabel="epoch")
    results.sort(key=lambda r: r["test_loss"])
    log(f"\n{'rank':>4}  {'optimizer':20s} {'test loss':>9}  {'accuracy':>8}  {'time':>7}")
    for i, r in enumerate(results, 1):
        log(f"{i:4d}  {r['optimizer']:20s} {r['test_loss']:9.4f}  {100 * r['test_accuracy']:7.1f}%  "
            f"{r['seconds']:6.1f}s")
    log(f"plot: {out / 'compare_optimizers.png'}")
    return results


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
#: name, function (works on numpy arrays and on tensors), start, view, minimum, lr per optimizer. The lrs
#: come from a grid search (300 and 500 steps; the lowest final value whose path stays in view), moved down to a
#: smaller lr where the best one jumps about too much to follow on the plot.
SURFACES = [
    ("Rosenbrock", _rosenbrock, (-1.5, 2.0), ((-2, 2), (-1, 3)), (1, 1),
     dict(SGD=1e-3, momentum=5e-4, Nesterov=5e-4, Adagrad=0.3, AdaDelta=5.0, RMSprop=0.01, Adam=0.05, AdamW=0.05)),
    ("Beale", _beale, (1.0, 1.5), ((-0.5, 4), (-1, 2)), (3, 0.5),
     dict(SGD=0.01, momentum=1e-3, Nesterov=1e-3, Adagrad=0.5, AdaDelta=3.0, RMSprop=0.03, Adam=0.05, AdamW=0.05)),
    ("saddle x\u00b2 - y\u00b2", _saddle, (-1.5, 1e-3), ((-2, 2), (-2, 2)), None,
     dict(SGD=0.02, momentum=0.02, Nesterov=0.02, Adagrad=0.6, AdaDelta=6.0, RMSprop=0.06, Adam=0.2, AdamW=0.2)),
    ("elongated valley", _valley, (-4.0, 1.0), ((-5, 5), (-1.5, 1.5)), (0, 0),
     dict(SGD=0.05, momentum=5e-3, Nesterov=0.01, Adagrad=0.5, AdaDelta=5.0, RMSprop=0.02, Adam=0.1, AdamW=0.1)),
]


def optimizer_paths(out="runs/paths", steps: int = 500, log=print) -> Path:
    """Each optimizer's trajectory over four 2-D loss surfaces, from the same start, on contour plots."""
    from .plots import contour_paths

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    out = _output_dir(out)
    panels = []
    for name, f, start, (xlim, ylim), minimum, lrs in SURFACES:
        paths = {}
        for label, opt_name, kwargs in PATH_OPTIMIZERS:
            p = Tensor(np.array(start, dtype=np.float64), device="numpy", requires_grad=True)
            opt = optim.OPTIMIZERS[opt_name]([p], lr=lrs[label], **kwargs)
            trace = [p.numpy().copy()]
            for _ in range(steps):
                opt.zero_grad()
                f(p[0], p[1]).backward()
                opt.step()
                xy = p.numpy()
                if not np.isfinite(xy).all() or np.abs(xy).max() > 1e3:
                    break  # diverged: keep the path so far
                trace.append(xy.copy())
            tr = np.array(trace)
            paths[label] = (tr[:, 0], tr[:, 1])
            final = f(*tr[-1])
            log(f"  {name:17s} {label:9s} lr {lrs[label]:<7g} after {len(tr) - 1:4d} steps: f = {final:.4g} at "
                f"({tr[-1][0]:.3f}, {tr[-1][1]:.3f})")
        panels.append({"name": name, "f": f, "xlim": xlim, "ylim": ylim, "paths": paths, "minimum": minimum})
    path = out / "optimizer_paths.png"
    contour_paths(panels, path, f"optimizer trajectories, {steps} steps from the same start (black dot), "
                  "lr tuned per optimizer and surface; red star: minimum")
    log(f"plot: {path}")
    return path
