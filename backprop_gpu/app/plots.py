"""Plots written as PNG files with matplotlib's Agg backend (no display needed).

Figures are made with :class:`matplotlib.figure.Figure` directly, not through ``pyplot``: no
global figure manager or GUI backend is touched, and ``pyplot``'s import (a tenth of a second
of a one-epoch run) is skipped; ``savefig`` renders PNGs with Agg.
"""
from __future__ import annotations

from matplotlib.figure import Figure


def training_curves(rows: list[dict], path, title: str = "") -> None:
    """Loss (left) and train/test metric (right) per epoch, from metrics.csv rows."""
    epochs = [r["epoch"] for r in rows]
    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    ax1.plot(epochs, [r["test_loss"] for r in rows], marker="o", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.plot(epochs, [r["train_metric"] for r in rows], marker="o", label="train")
    ax2.plot(epochs, [r["test_metric"] for r in rows], marker="o", label="test")
    ax2.set(xlabel="epoch", ylabel=metric, title=metric)
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def loss_curves(curves: dict, path, title: str, xlabel: str = "epoch", logy: bool = True) -> None:
    """One line per named run: ``curves[name] = list of losses``."""
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, marker=".", label=name)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="test loss", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def contour_paths(panels: list[dict], path, title: str) -> None:
    """Per panel: ``{"name", "f" (vectorised numpy fn of x, y), "xlim", "ylim", "paths": {opt: (xs, ys)},
    "minimum": (x, y) or None}``: contours of f with each optimizer's trajectory."""
    import numpy as np

    cols = 2
    rows = (len(panels) + 1) // cols
    fig = Figure(figsize=(12, 5 * rows))
    axes = fig.subplots(rows, cols)
    for ax, panel in zip(np.ravel(axes), panels):
        xs = np.linspace(*panel["xlim"], 300)
        ys = np.linspace(*panel["ylim"], 300)
        X, Y = np.meshgrid(xs, ys)
        Z = panel["f"](X, Y)
        levels = np.quantile(Z, np.linspace(0.0, 0.95, 25) ** 2)
        ax.contour(X, Y, Z, levels=np.unique(levels), cmap="Greys", linewidths=0.6)
        for i, (name, (px, py)) in enumerate(panel["paths"].items()):
            # every other path dashed, so paths that run together stay distinguishable
            ax.plot(px, py, marker=".", markersize=2, linewidth=1.2, linestyle="-" if i % 2 == 0 else "--",
                    label=name)
        ax.plot(*panel["paths"][next(iter(panel["paths"]))][0][0:1],
                *panel["paths"][next(iter(panel["paths"]))][1][0:1], "ko", markersize=6)
        if panel.get("minimum") is not None:
            ax.plot(*panel["minimum"], "r*", markersize=12)
        ax.set(xlim=panel["xlim"], ylim=panel["ylim"], title=panel["name"])
    np.ravel(axes)[0].legend(fontsize=8, loc="best")
    for ax in np.ravel(axes)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
