"""The backprop-gpu CLI end to end on tiny settings: outputs, resume determinism, demos, errors."""
import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from backprop_gpu.app import checkpoint
from backprop_gpu.app.cli import main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def params_of(run_dir):
    tensors, _ = checkpoint.load(run_dir / "checkpoint.safetensors")
    return {k: v for k, v in tensors.items()}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path, min_side=200):
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_train_writes_metrics_curves_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".best.safetensors.k1ll3d.tmp").write_bytes(b"\0" * 4096)  # an earlier run's save, killed mid-write
    code, stdout, _ = run(["train", "--epochs", "2", "--hidden", "16,16", "--device", "cpu", "--out", str(out),
                           "--no-progress"], capsys)
    assert code == 0
    assert not list(out.glob(".*.tmp"))
    assert "epoch   2/2" in stdout and "samples/s" in stdout
    assert "done: test accuracy" in stdout and "device cpu" in stdout
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["test_metric"]) > 0.5
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert (out / "best.safetensors").stat().st_size > 1000
    assert_png(out / "curves.png")


def test_resume_is_bit_identical_on_cpu(tmp_path, capsys):
    # a run stopped after epoch 1 (as if killed) and resumed equals an uninterrupted one, bit for bit,
    # with a learning-rate schedule, weight decay and per-epoch reshuffling in play
    common = ["--epochs", "3", "--hidden", "12", "--optimizer", "adamw", "--batch-size", "16", "--device", "numba",
              "--seed", "3", "--scheduler", "cosine", "--no-progress"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(["train", "--out", str(straight)] + common, capsys)[0] == 0
    code, stdout, _ = run(["train", "--stop-after", "1", "--out", str(split)] + common, capsys)
    assert code == 0 and "stopped after epoch 1 of 3" in stdout
    code, stdout, _ = run(["train", "--out", str(split), "--resume", str(split)] + common, capsys)
    assert code == 0 and "resumed from" in stdout and "after epoch 1" in stdout
    a, b = params_of(straight), params_of(split)
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    def rows(d):  # every column but the throughput, which is a timing
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_csv(d / "metrics.csv")]
    assert rows(straight) == rows(split) and len(rows(split)) == 3
    assert [float(r["lr"]) for r in rows(split)] == pytest.approx([3e-3, 2.25e-3, 0.75e-3])  # cosine over 3 epochs
    best = max(range(3), key=lambda i: float(rows(split)[i]["test_metric"]))
    _, meta = checkpoint.load(split / "best.safetensors")
    assert meta["extra"]["epoch"] == best + 1


def test_resume_refuses_another_configuration_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--epochs", "1", "--hidden", "8", "--dataset", "spirals", "--out", str(out), "--device",
                "cpu", "--no-progress"], capsys)[0] == 0
    ck = out / "checkpoint.safetensors"
    before = ck.read_bytes()
    code, _, err = run(["train", "--epochs", "2", "--hidden", "9", "--dataset", "spirals", "--out", str(out),
                        "--resume", str(out), "--device", "cpu"], capsys)
    assert code == 2 and "0.weight: checkpoint (8, 2) vs model (9, 2)" in err
    code, _, err = run(["train", "--epochs", "2", "--hidden", "8", "--dataset", "spirals", "--optimizer", "sgd",
                        "--out", str(out), "--resume", str(out), "--device", "cpu"], capsys)
    assert code == 2 and "for Adam, not SGD" in err
    code, _, err = run(["train", "--epochs", "2", "--hidden", "8", "--dataset", "spirals", "--scheduler", "step",
                        "--out", str(out), "--resume", str(out), "--device", "cpu"], capsys)
    assert code == 2 and "scheduler 'none' (checkpoint) vs 'step' (now)" in err
    assert ck.read_bytes() == before


def test_resume_refuses_a_corrupt_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-progress"], capsys)[0] == 0
    ck = out / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    code, _, err = run(["train", "--epochs", "2", "--out", str(out), "--resume", str(ck), "--device", "cpu"], capsys)
    assert code == 2 and "corrupt or truncated" in err
    code, _, err = run(["train", "--epochs", "2", "--hidden", "7", "--out", str(tmp_path / "o"), "--resume",
                        str(tmp_path / "nope.safetensors"), "--device", "cpu"], capsys)
    assert code == 2 and "does not exist" in err


def test_every_optimizer_is_selectable_and_other_datasets(tmp_path, capsys):
    from backprop_gpu.optim import OPTIMIZERS

    for name in OPTIMIZERS:
        code, stdout, _ = run(["train", "--epochs", "1", "--optimizer", name, "--dataset", "spirals", "--hidden",
                               "8", "--out", str(tmp_path / name), "--device", "cpu", "--no-progress"], capsys)
        assert code == 0 and f"with {name}" in stdout
    for sched, first_lrs in (("warmup", [3e-4, 3e-3]), ("step", [3e-3, 1.5e-3]), ("exponential", [3e-3, 2.7e-3]),
                             ("plateau", [3e-3, 3e-3])):
        d = tmp_path / sched
        code, stdout, _ = run(["train", "--epochs", "2", "--scheduler", sched, "--dataset", "spirals", "--hidden", "8",
                               "--out", str(d), "--device", "cpu", "--no-progress"], capsys)
        assert code == 0 and f"({sched} schedule)" in stdout
        assert [float(r["lr"]) for r in read_csv(d / "metrics.csv")] == pytest.approx(first_lrs)
    code, stdout, _ = run(["train", "--epochs", "1", "--optimizer", "sgd", "--momentum", "0.9", "--nesterov",
                           "--weight-decay", "1e-4", "--dataset", "spirals", "--out", str(tmp_path / "nag"),
                           "--device", "cpu", "--no-progress"], capsys)
    assert code == 0
    code, _, err = run(["train", "--optimizer", "adam", "--momentum", "0.9", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "optimizer adam takes no momentum" in err
    code, stdout, _ = run(["train", "--epochs", "2", "--dataset", "linear", "--out", str(tmp_path / "lin"),
                           "--device", "cpu", "--no-progress", "--batch-size", "full", "--optimizer", "sgd"], capsys)
    assert code == 0 and "test r2" in stdout


def test_cnn_and_mnist_from_idx(tmp_path, capsys):
    from test_data import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("t10k", 8)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    code, stdout, _ = run(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "cnn", "--epochs",
                           "1", "--out", str(tmp_path / "cnn"), "--device", "cpu", "--no-progress"], capsys)
    assert code == 0 and "training cnn on mnist (32 train / 8 test)" in stdout
    code, _, err = run(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--device", "cpu"],
                       capsys)
    assert code == 2 and "does not exist" in err


def test_compare_optimizers_demo(tmp_path, capsys):
    code, stdout, _ = run(["compare-optimizers", "--epochs", "1", "--out", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 0
    for label in ("Nesterov", "Adagrad", "AdaDelta", "RMSprop", "AdamW", "SGD, batch GD", "SGD, stochastic"):
        assert label in stdout
    assert "rank  optimizer" in stdout
    assert_png(tmp_path / "compare_optimizers.png")


def test_optimizer_paths_demo(tmp_path, capsys):
    code, stdout, _ = run(["optimizer-paths", "--steps", "20", "--out", str(tmp_path)], capsys)
    assert code == 0 and "Rosenbrock" in stdout and "Beale" in stdout and "saddle" in stdout
    assert_png(tmp_path / "optimizer_paths.png", min_side=500)


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "lbfgs"])
    with pytest.raises(SystemExit):
        main(["train", "--hidden", "a,b"])
    code, _, err = run(["train", "--device", "tpu"], capsys)
    assert code == 2 and "unknown device" in err


def test_resume_keeps_the_checkpoints_hyperparameters_and_refuses_others(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--hidden", "8", "--dataset", "spirals", "--optimizer", "sgd", "--device", "cpu",
            "--no-progress", "--out", str(out)]
    assert run(base + ["--epochs", "1", "--lr", "0.2", "--momentum", "0.5"], capsys)[0] == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    code, _, err = run(base + ["--epochs", "2", "--lr", "0.05", "--resume", str(out)], capsys)
    assert code == 2 and "--lr 0.05 (the checkpoint has 0.2)" in err  # was: printed 0.05, trained with 0.2
    code, _, err = run(base + ["--epochs", "2", "--weight-decay", "0.1", "--resume", str(out)], capsys)
    assert code == 2 and "--weight-decay 0.1 (the checkpoint has None)" in err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    code, stdout, _ = run(base + ["--epochs", "2", "--resume", str(out)], capsys)  # no flags: the checkpoint's
    rows = read_csv(out / "metrics.csv")
    assert code == 0 and [float(r["lr"]) for r in rows] == [0.2, 0.2]
    assert "with sgd lr 0.2," in stdout  # what is used is what is printed
