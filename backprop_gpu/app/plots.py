"""Plots written as PNG files with matplotlib's Agg backend (no display needed).

Figures are made with :class:`matplotlib.figure.Figure` directly, not through ``pyplot``: no
global figure manager or GUI backend is touched, and ``pyplot``'s import (a tenth of a second
of a one-epoch run) is skipped; ``savefig`` renders PNGs with Agg.

Each plot function returns the :class:`~matplotlib.figure.Figure` it drew (``path=None``: drawn,
not saved), so that tests read back what a reader sees: the lines' data, styles and labels.
"""
from __future__ import annotations

from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnchoredText

_COLORS = [f"C{i}" for i in range(10)]
_LINESTYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def line_styles(n: int) -> list[dict]:
    """``n`` keyword sets ``{color, linestyle, marker}`` for ``Axes.plot``: up to ten lines, no two share a
    colour or a marker, and neighbours never share a line style, so lines drawn over each other (Adam and
    AdamW) stay visible; up to twenty, no two share all three."""
    return [dict(color=_COLORS[i % 10], linestyle=_LINESTYLES[i % 4], marker=_MARKERS[i % 10]) for i in range(n)]


def widths_text(widths) -> str:
    """Layer widths as one writes them: ``(64, 64, 10)`` -> ``"64-64-10"``."""
    return "-".join(str(int(w)) for w in widths)


def batch_text(batch_size, n_train: int) -> str:
    """``"batch 32"``, ``"batch 1 (stochastic)"`` or ``"full batch (1347)"`` (``batch_size`` None)."""
    if batch_size is None or batch_size >= n_train:
        return f"full batch ({n_train})"
    return "batch 1 (stochastic)" if batch_size == 1 else f"batch {batch_size}"


def run_title(model: str, widths, dataset: str, optimizer: str, lr: float, batch_size, n_train: int,
              extras=()) -> str:
    """``"MLP 64-64-10 on digits: adam, lr 0.003, batch 32"``, then ``extras`` (``"momentum 0.9"``, ...).

    ``widths`` (input, hidden..., output) names an MLP's layers; ``None`` for a model described by name."""
    name = model.upper() + (f" {widths_text(widths)}" if widths is not None else "")
    return ", ".join([f"{name} on {dataset}: {optimizer}", f"lr {lr:g}", batch_text(batch_size, n_train),
                      *extras])


def _integer_ticks(ax) -> None:
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _plain_log_axis(axis, values, unit: str = "") -> None:
    """A log axis labelled as plain numbers (``1,000``, not ``10^3`` or ``2x10^0``): at 1, 2, 5 per decade
    over a range under 300x, else at the decades alone, so that labels never run together."""
    lo, hi = min(values), max(values)
    subs = (1.0, 2.0, 5.0) if hi < 300 * lo else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,g}{unit}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _positive(runs: dict, key: str) -> list:
    """Every run's values of ``key`` that a log axis can show (``[1.0]`` if none)."""
    return [v for run in runs.values() for v in run[key] if v > 0] or [1.0]


def best_epoch(rows: list[dict]) -> int:
    """Index into ``rows`` of the best test metric (accuracy or R², higher is better); the first on ties."""
    return max(range(len(rows)), key=lambda i: rows[i]["test_metric"])


def training_curves(rows: list[dict], path=None, title: str = "") -> Figure:
    """Loss (left) and train/test metric (right) per epoch, from metrics.csv rows; accuracy in percent,
    as the terminal prints it. The best epoch (best test metric, the one ``best.safetensors`` holds) is
    marked on both panels."""
    epochs = [r["epoch"] for r in rows]
    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
    scale, unit = (100.0, "%") if metric == "accuracy" else (1.0, "")
    fig = Figure(figsize=(11, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    ax1.plot(epochs, [r["test_loss"] for r in rows], marker="s", linestyle="--", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [scale * r["train_metric"] for r in rows], marker="o", label="train")
    ax2.plot(epochs, [scale * r["test_metric"] for r in rows], marker="s", linestyle="--", label="test")
    ax2.set(xlabel="epoch", ylabel=f"{metric} ({unit})" if unit else metric, title=metric)
    if rows:
        i = best_epoch(rows)
        best, value = epochs[i], scale * rows[i]["test_metric"]
        shown = f"{value:.1f}{unit}" if unit else f"{value:.4f}"
        for ax in (ax1, ax2):
            ax.axvline(best, color="0.5", linestyle=":", linewidth=1.2, zorder=0)
        ax1.plot([best], [rows[i]["test_loss"]], linestyle="none", marker="*", markersize=15, color="C3",
                 label=f"best epoch ({best}, by test {metric})", zorder=3)
        ax2.plot([best], [value], linestyle="none", marker="*", markersize=15, color="C3",
                 label=f"best test {metric}: {shown} at epoch {best}", zorder=3)
    for ax in (ax1, ax2):
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def optimizer_curves(runs: dict, path=None, title: str = "") -> Figure:
    """Test loss and test accuracy of each run against parameter updates (top) and training seconds
    (bottom), both log scale: batch, stochastic and mini-batch gradient descent compared by the work
    done, not by epochs, whose cost differs a thousandfold.

    ``runs[label] = {"updates", "seconds", "test_loss", "test_accuracy"}``, one entry per epoch,
    ``updates`` and ``seconds`` counted from the start; accuracy as a fraction, drawn in percent."""
    fig = Figure(figsize=(13, 9.5))
    axes = fig.subplots(2, 2)
    styles = line_styles(len(runs))
    every = max(1, max((len(run["updates"]) for run in runs.values()), default=1) // 12)
    for (label, run), style in zip(runs.items(), styles):
        for row, x in enumerate(("updates", "seconds")):
            axes[row, 0].plot(run[x], run["test_loss"], markevery=every, markersize=6, linewidth=1.6,
                              label=label, **style)
            axes[row, 1].plot(run[x], [100 * a for a in run["test_accuracy"]], markevery=every, markersize=6,
                              linewidth=1.6, label=label, **style)
    for row, (key, x, unit) in enumerate((("updates", "parameter updates", ""),
                                          ("seconds", "training time (s)", " s"))):
        for col, y in enumerate(("test loss", "test accuracy (%)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis, _positive(runs, key), unit)
            if col == 0:
                ax.set_yscale("log")
                _plain_log_axis(ax.yaxis, _positive(runs, "test_loss"))
            ax.set(xlabel=x, ylabel=y, title=f"{y.split(' (')[0]} vs {x.split(' (')[0]}")
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=9, frameon=False)
    fig.suptitle(f"{title} ({'a marker per epoch' if every == 1 else f'a marker every {every} epochs'})"
                 if title else "")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def path_status(path: dict, steps: int) -> str:
    """What a trajectory did, in words: ``"diverged after 41 steps"`` (with the step it left the view at, when
    that came earlier), ``"left the view at step 37"``, or
    ``""`` for one that ran all ``steps`` and ended in view."""
    if path["diverged"]:
        left = path["left_view_at"]
        return (f"left the view at step {left}, diverged after {path['steps']} steps" if left is not None
                and left < path["steps"] else f"diverged after {path['steps']} steps")
    if path["left_view_at"] is not None:
        return f"left the view at step {path['left_view_at']}"
    return "" if path["steps"] == steps else f"stopped after {path['steps']} steps"


def _emptiest_corner(panel) -> str:
    """The corner of a panel's view farthest from every path point shown (in axes units), for its note."""
    import numpy as np

    (x0, x1), (y0, y1) = panel["xlim"], panel["ylim"]
    xs = np.concatenate([p["xs"] for p in panel["paths"].values()] + [[panel["start"][0]]])
    ys = np.concatenate([p["ys"] for p in panel["paths"].values()] + [[panel["start"][1]]])
    u, v = (xs - x0) / (x1 - x0), (ys - y0) / (y1 - y0)
    shown = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    u, v = u[shown], v[shown]
    corners = {"upper right": (1, 1), "lower right": (1, 0), "upper left": (0, 1), "lower left": (0, 0)}
    return max(corners, key=lambda c: np.hypot(u - corners[c][0], v - corners[c][1]).min())


def contour_paths(panels: list[dict], path=None, title: str = "", steps: int | None = None) -> Figure:
    """Contours of each panel's surface with each optimizer's trajectory, one shared legend.

    Per panel: ``{"name", "f" (vectorised numpy fn of x, y), "xlim", "ylim", "start", "minimum" ((x, y) or
    None), "paths": {label: {"xs", "ys", "lr", "steps", "diverged", "left_view_at"}}}``, ``left_view_at`` the
    step after which the path stays outside the view (None if it ends inside). A path is drawn until it leaves
    the view, with an ``x`` where it does; the panel's note says which diverged or left, and after how many
    steps. Markers sit every ``steps // 10`` steps, so their spacing shows speed."""
    import numpy as np

    cols = 2
    rows = (len(panels) + 1) // cols
    fig = Figure(figsize=(12.5, 5.2 * rows + 1.0))
    axes = np.ravel(fig.subplots(rows, cols, squeeze=False))
    labels = list(panels[0]["paths"]) if panels else []
    styles = dict(zip(labels, line_styles(len(labels))))
    for ax, panel in zip(axes, panels):
        xs = np.linspace(*panel["xlim"], 300)
        ys = np.linspace(*panel["ylim"], 300)
        X, Y = np.meshgrid(xs, ys)
        Z = panel["f"](X, Y)
        levels = np.quantile(Z, np.linspace(0.0, 0.95, 25) ** 2)
        ax.contour(X, Y, Z, levels=np.unique(levels), cmap="Greys", linewidths=0.6, alpha=0.7)
        notes = []
        for label, p in panel["paths"].items():
            n = p["steps"] if steps is None else steps
            style = styles[label]
            ax.plot(p["xs"], p["ys"], markevery=max(1, n // 10), markersize=5, linewidth=1.5, label=label, **style)
            status = path_status(p, n)
            if p["left_view_at"] is not None:
                # the last point inside the view: where the reader loses the path
                k = p["left_view_at"] - 1
                if k >= 0:
                    ax.plot([p["xs"][k]], [p["ys"][k]], marker="x", markersize=11, markeredgewidth=2.5,
                            color=style["color"], linestyle="none", zorder=4)
            else:  # where it ended, larger, so that paths sharing a valley are told apart by how far they got
                ax.plot([p["xs"][-1]], [p["ys"][-1]], marker=style["marker"], markersize=10, color=style["color"],
                        markeredgecolor="k", linestyle="none", zorder=4)
            notes.append(f"{label} lr {p['lr']:g}" + (f": {status}" if status else ""))
        ax.plot(*panel["start"], "ko", markersize=7, zorder=5)
        if panel.get("minimum") is not None:
            ax.plot(*panel["minimum"], "r*", markersize=14, zorder=5)
        note = AnchoredText("\n".join(notes), loc=_emptiest_corner(panel), prop=dict(fontsize=7.5), frameon=True)
        note.patch.set(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.7")
        note.zorder = 6
        ax.add_artist(note)
        ax.set(xlim=panel["xlim"], ylim=panel["ylim"], title=panel["name"], xlabel="x", ylabel="y")
    for ax in axes[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], linewidth=1.5, **styles[label]) for label in labels]
    handles += [Line2D([], [], color="k", marker="o", linestyle="none"),
                Line2D([], [], color="r", marker="*", markersize=12, linestyle="none"),
                Line2D([], [], color="0.6", marker="o", markersize=9, markeredgecolor="k", linestyle="none"),
                Line2D([], [], color="0.3", marker="x", markeredgewidth=2.5, markersize=9, linestyle="none")]
    fig.legend(handles, labels + ["start", "minimum", "end of a path (large marker)",
                                  "last point in view of a path that left it"],
               loc="lower center", ncol=6, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
