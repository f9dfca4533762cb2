"""What the plots draw, read back from the figures: percent values, the best epoch, titles, distinct line
styles, the x axes of the optimizer comparison, the paths' true step counts and divergence, the ranking."""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from backprop_gpu.app import demos, plots


def lines_of(ax, label=None):
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    return lines if label is None else [ln for ln in lines if ln.get_label() == label]


def capture(monkeypatch, name):
    """Wrap ``plots.<name>`` so that the figures it returns (and its arguments) are kept."""
    calls, real = [], getattr(plots, name)

    def keep(*args, **kwargs):
        fig = real(*args, **kwargs)
        calls.append((args, fig))
        return fig
    monkeypatch.setattr(plots, name, keep)
    return calls


def style(line):
    return (line.get_color(), line.get_linestyle(), line.get_marker())


def rows_of(test_metric, metric="accuracy"):
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "test_loss": 1.2 / (i + 1), "train_metric": 0.1 * (i + 5),
             "test_metric": v, "metric": metric} for i, v in enumerate(test_metric)]


def test_training_curves_draw_accuracy_in_percent_and_mark_the_first_best_epoch():
    rows = rows_of([0.5, 0.8125, 0.8125, 0.7])
    fig = plots.training_curves(rows, title="a title")
    loss, acc = fig.axes
    assert acc.get_ylabel() == "accuracy (%)" and fig._suptitle.get_text() == "a title"
    np.testing.assert_allclose(lines_of(acc, "test")[0].get_ydata(), [50, 81.25, 81.25, 70])
    np.testing.assert_allclose(lines_of(acc, "train")[0].get_ydata(), [50, 60, 70, 80])
    assert plots.best_epoch(rows) == 1  # the first of two equal bests: the epoch best.safetensors keeps
    star, = lines_of(acc, "best test accuracy: 81.2% at epoch 2")
    assert list(star.get_xdata()) == [2] and list(star.get_ydata()) == [81.25]
    star, = lines_of(loss, "best epoch (2, by test accuracy)")
    assert list(star.get_ydata()) == [rows[1]["test_loss"]]
    for ax in (loss, acc):  # the dotted line through the best epoch, on both panels
        assert any(list(ln.get_xdata()) == [2, 2] for ln in ax.get_lines())
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_training_curves_leave_r2_unscaled():
    fig = plots.training_curves(rows_of([0.25, 0.5, 0.375], metric="r2"))
    acc = fig.axes[1]
    assert acc.get_ylabel() == "r2"
    np.testing.assert_allclose(lines_of(acc, "test")[0].get_ydata(), [0.25, 0.5, 0.375])
    assert lines_of(acc, "best test r2: 0.5000 at epoch 2")


def test_run_titles_name_widths_batch_optimizer_and_lr():
    assert plots.run_title("mlp", (64, 32, 10), "digits", "adam", 3e-3, 32, 1347) == \
        "MLP 64-32-10 on digits: adam, lr 0.003, batch 32"
    assert plots.run_title("mlp", (2, 8, 3), "spirals", "sgd", 0.5, None, 600, ["momentum 0.9"]) == \
        "MLP 2-8-3 on spirals: sgd, lr 0.5, full batch (600), momentum 0.9"
    assert plots.run_title("cnn", None, "mnist", "sgd", 0.1, 1, 32) == "CNN on mnist: sgd, lr 0.1, batch 1 (stochastic)"


def test_a_training_run_plots_its_rows_under_a_title_of_its_settings(tmp_path, monkeypatch):
    from backprop_gpu.app.train import TrainConfig, Trainer

    calls = capture(monkeypatch, "training_curves")
    cfg = TrainConfig(dataset="spirals", hidden=(8, 4), optimizer="sgd", momentum=0.9, batch_size=64, epochs=3,
                      device="numpy", out=str(tmp_path / "run"), progress=False)
    trainer = Trainer(cfg, log=lambda *a: None)
    trainer.fit()
    (args, fig), = calls
    assert args[1] == tmp_path / "run" / "curves.png" and args[1].stat().st_size > 10_000
    assert fig._suptitle.get_text() == "MLP 2-8-4-3 on spirals: sgd, lr 0.1, batch 64, momentum 0.9"
    acc = fig.axes[1]
    np.testing.assert_allclose(lines_of(acc, "test")[0].get_ydata(), [100 * r["test_metric"] for r in trainer.rows])
    best = max(trainer.rows, key=lambda r: r["test_metric"])  # what the run's last log line reports
    star, = [ln for ln in lines_of(acc) if ln.get_label().startswith("best")]
    assert list(star.get_xdata()) == [best["epoch"]]


def test_line_styles_are_distinct():
    styles = plots.line_styles(10)
    for key in ("color", "marker"):
        assert len({s[key] for s in styles}) == 10
    assert all(a["linestyle"] != b["linestyle"] for a, b in zip(styles, styles[1:]))
    assert len({tuple(s.values()) for s in plots.line_styles(20)}) == 20


def _overlapping_tick_labels(fig):
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    bad = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            bad += [(ax.get_title(), i) for i in range(len(boxes) - 1) if boxes[i].overlaps(boxes[i + 1])]
    return bad


def test_optimizer_curves_plot_every_run_against_updates_and_seconds():
    hist = lambda updates, s, loss, acc: dict(updates=updates, seconds=s, test_loss=loss, test_accuracy=acc)  # noqa
    runs = {"SGD, batch GD": hist([1, 2, 3], [0.001, 0.002, 0.003], [2.2, 2.1, 2.0], [0.1, 0.2, 0.3]),
            "SGD, stochastic": hist([1347, 2694, 4041], [1.0, 2.0, 3.0], [0.5, 0.3, 0.2], [0.8, 0.9, 0.95]),
            "Adam": hist([43, 86, 129], [0.05, 0.1, 0.15], [0.4, 0.3, 0.25], [0.85, 0.9, 0.92]),
            "AdamW": hist([43, 86, 129], [0.05, 0.1, 0.15], [0.4, 0.3, 0.25], [0.85, 0.9, 0.92])}  # same as Adam
    fig = plots.optimizer_curves(runs, title="t")
    assert fig._suptitle.get_text() == "t (a marker per epoch)"
    (loss_u, acc_u), (loss_s, acc_s) = np.reshape(fig.axes, (2, 2))
    assert [ax.get_xlabel() for ax in fig.axes] == ["parameter updates"] * 2 + ["training time (s)"] * 2
    assert [ax.get_ylabel() for ax in fig.axes] == ["test loss", "test accuracy (%)"] * 2
    assert all(ax.get_xscale() == "log" for ax in fig.axes) and loss_u.get_yscale() == "log"
    for label, run in runs.items():
        for ax, x, y in ((loss_u, "updates", "test_loss"), (acc_u, "updates", "test_accuracy"),
                         (loss_s, "seconds", "test_loss"), (acc_s, "seconds", "test_accuracy")):
            line, = lines_of(ax, label)
            np.testing.assert_allclose(line.get_xdata(), run[x])
            np.testing.assert_allclose(line.get_ydata(), [100 * v for v in run[y]] if y == "test_accuracy" else run[y])
    drawn = [style(lines_of(loss_u, label)[0]) for label in runs]
    assert len(set(drawn)) == len(runs)
    adam, adamw = drawn[2], drawn[3]
    assert adam[1] != adamw[1] and adam[2] != adamw[2]  # AdamW drawn over Adam still lets Adam show
    legend, = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(runs)
    assert loss_u.xaxis.get_major_formatter()(1000, 0) == "1,000"
    assert acc_s.xaxis.get_major_formatter()(0.01, 0) == "0.01 s"
    assert not _overlapping_tick_labels(fig)


def test_rank_is_by_accuracy_then_loss():
    results = [{"optimizer": "a", "test_accuracy": 0.9, "test_loss": 0.30},
               {"optimizer": "b", "test_accuracy": 0.95, "test_loss": 0.40},
               {"optimizer": "c", "test_accuracy": 0.9, "test_loss": 0.20}]
    assert [r["optimizer"] for r in demos.rank(results)] == ["b", "c", "a"]


def test_compare_optimizers_records_updates_and_time_and_prints_the_ranking(tmp_path, monkeypatch):
    calls, lines = capture(monkeypatch, "optimizer_curves"), []
    results = demos.compare_optimizers(out=tmp_path, epochs=2, dataset="spirals", hidden=(8,), device="numpy",
                                       log=lines.append)
    n = 600  # spirals' training set
    per_epoch = {None: 1, 1: n, 32: -(-n // 32)}
    by_label = {r["optimizer"]: r for r in results}
    assert set(by_label) == {label for label, *_ in demos.COMPARISON}
    for label, _, _, bs in demos.COMPARISON:
        h = by_label[label]["history"]
        assert h["updates"] == [per_epoch[bs], 2 * per_epoch[bs]] and by_label[label]["updates"] == 2 * per_epoch[bs]
        assert 0 < h["seconds"][0] < h["seconds"][1] and len(h["test_loss"]) == len(h["test_accuracy"]) == 2
    assert results == demos.rank(results)
    keys = [(-r["test_accuracy"], r["test_loss"]) for r in results]
    assert keys == sorted(keys)
    start = next(i for i, ln in enumerate(lines) if ln.lstrip("\n").startswith("rank  optimizer  "))
    assert "accuracy  test loss" in lines[start]  # accuracy first: what the ranking is by
    printed = [ln.split()[1:-4] for ln in lines[start + 1:start + 11]]
    assert [" ".join(p) for p in printed] == [r["optimizer"] for r in results]
    (args, fig), = calls
    assert args[0] == {r["optimizer"]: r["history"] for r in by_label.values()}
    title = fig._suptitle.get_text()
    assert title == "MLP 2-8-3 on spirals: same initialisation, 2 epochs each (a marker per epoch)"
    assert (tmp_path / "compare_optimizers.png").stat().st_size > 10_000


def test_a_path_counts_its_steps_and_says_when_it_diverged():
    f, view = demos._valley, ((-5, 5), (-1.5, 1.5))
    # SGD on 0.5 (x² + 20 y²): x shrinks by (1 - lr) per step, y by (1 - 20 lr), here -3: it diverges
    p = demos.trace_path(f, (-4.0, 1.0), "sgd", 0.2, {}, 50, view)
    np.testing.assert_allclose(p["xs"], -4 * 0.8 ** np.arange(len(p["xs"])))
    np.testing.assert_allclose(p["ys"], (-3.0) ** np.arange(len(p["ys"])))
    assert p["diverged"] and p["steps"] == 7 and len(p["xs"]) == 8  # 3^7 > 1e3: the 7th step is the last
    assert p["left_view_at"] == 1 and np.abs(p["ys"][0]) <= 1.5  # out of view after one step, for good
    assert plots.path_status(p, 50) == "left the view at step 1, diverged after 7 steps"
    # an overflow to inf is not drawn: the path keeps its finite points and says how many steps it took
    p = demos.trace_path(demos._rosenbrock, (-1.5, 2.0), "sgd", 0.1, {}, 50, ((-2, 2), (-1, 3)), limit=np.inf)
    assert p["diverged"] and np.isfinite(p["xs"]).all() and p["steps"] == len(p["xs"])  # the last one dropped
    p = demos.trace_path(f, (-4.0, 1.0), "adam", 0.1, {}, 50, view)
    assert not p["diverged"] and p["steps"] == 50 and len(p["xs"]) == 51 and p["left_view_at"] is None
    assert plots.path_status(p, 50) == ""


def test_optimizer_paths_draw_true_step_counts_and_one_shared_legend(tmp_path, monkeypatch):
    calls, lines = capture(monkeypatch, "contour_paths"), []
    lrs = dict(demos.SURFACES[3][5], SGD=0.2)  # the valley's, with SGD diverging
    surfaces = [("valley", demos._valley, (-4.0, 1.0), ((-5, 5), (-1.5, 1.5)), (0, 0), lrs)]
    panels = demos.optimizer_paths(out=tmp_path, steps=20, log=lines.append, surfaces=surfaces)
    (args, fig), = calls
    assert args[0] is panels
    paths = panels[0]["paths"]
    assert list(paths) == [label for label, *_ in demos.PATH_OPTIMIZERS]
    assert paths["SGD"]["diverged"] and paths["SGD"]["steps"] == 7
    assert all(p["steps"] == 20 and not p["diverged"] for label, p in paths.items() if label != "SGD")
    assert any("SGD" in ln and "diverged after 7 steps" in ln for ln in lines)
    assert sum("ran 20 steps" in ln for ln in lines) == 7
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y") and ax.get_legend() is None
    legend, = fig.legends
    assert [t.get_text() for t in legend.get_texts()][:8] == list(paths)
    assert len({style(lines_of(ax, label)[0]) for label in paths}) == 8
    sgd = paths["SGD"]
    cross, = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]  # where SGD leaves the view
    assert (cross.get_xdata()[0], cross.get_ydata()[0]) == (sgd["xs"][0], sgd["ys"][0])
    note, = ax.artists  # the panel's note: each optimizer's lr, and what became of the paths that left
    assert "SGD lr 0.2: left the view at step 1, diverged after 7 steps\nmomentum lr 0.01\n" in note.txt.get_text()
    assert (tmp_path / "optimizer_paths.png").stat().st_size > 10_000


def test_the_rosenbrock_lrs_show_what_their_comment_says():
    steps = 500
    name, f, start, view, minimum, lrs = demos.SURFACES[0]
    assert name == "Rosenbrock"
    kwargs = {label: kw for label, _, kw in demos.PATH_OPTIMIZERS}
    got = {label: demos.trace_path(f, start, opt, lrs[label], kwargs[label], steps, view)
           for label, opt in (("SGD", "sgd"), ("momentum", "sgd"), ("Adam", "adam"))}
    end = {k: f(p["xs"][-1], p["ys"][-1]) for k, p in got.items()}
    crossings = {k: int((np.diff(np.sign(p["ys"] - p["xs"] ** 2)) != 0).sum()) for k, p in got.items()}
    assert not any(p["diverged"] for p in got.values())
    assert end["SGD"] > 1 and end["Adam"] < 0.05  # SGD crawls; Adam's steady steps reach the minimum's bowl
    # momentum overshoots: it swings across the valley floor (y = x²) several times more often than the others
    assert crossings["momentum"] > 3 * max(crossings["SGD"], crossings["Adam"])
