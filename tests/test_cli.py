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


# -- run directories (issue 12 item 7) -------------------------------------------------------------------
TINY = ["--dataset", "spirals", "--hidden", "4", "--device", "numpy", "--no-progress"]


def test_each_run_gets_its_own_directory_and_latest_links_the_newest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(["train", "--epochs", "1"] + TINY, capsys)[0] == 0
    first = (tmp_path / "runs" / "latest").resolve()
    best = (first / "best.safetensors").read_bytes()
    code, stdout, _ = run(["train", "--epochs", "2", "--stop-after", "1", "--seed", "1"] + TINY, capsys)
    assert code == 0
    second = (tmp_path / "runs" / "latest").resolve()
    assert second != first and second.parent == first.parent  # was: both in runs/latest, the first overwritten
    assert (first / "best.safetensors").read_bytes() == best
    assert f"outputs in runs/{second.name}/" in stdout
    # what the second run printed continues it, in its own directory, through the latest link
    assert f"continue with: backprop-gpu train --resume runs/{second.name} " in stdout
    code, stdout, _ = run(["train", "--epochs", "2", "--seed", "1", "--resume", "runs/latest"] + TINY, capsys)
    assert code == 0 and f"resumed from runs/{second.name}/checkpoint.safetensors after epoch 1" in stdout
    assert [r["epoch"] for r in read_csv(second / "metrics.csv")] == ["1", "2"]
    assert len(read_csv(first / "metrics.csv")) == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([first.name, second.name, "latest"])
    code, _, _ = run(["train", "--epochs", "1", "--name", "exp"] + TINY, capsys)
    assert code == 0 and (tmp_path / "runs" / "latest").resolve() == tmp_path / "runs" / "exp"


def test_another_runs_directory_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--epochs", "1", "--out", str(out)] + TINY, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, err = run(["train", "--epochs", "1", "--seed", "5", "--out", str(out)] + TINY, capsys)
    assert code == 2 and err.count("\n") == 1 and f"{out} holds another run" in err and "--overwrite" in err
    assert "training" not in stdout and {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = run(["train", "--epochs", "1", "--name", "x", "--out", str(out)] + TINY, capsys)
    assert code == 2 and "give --out or those" in err
    code, _, _ = run(["train", "--epochs", "1", "--seed", "5", "--out", str(out), "--overwrite"] + TINY, capsys)
    assert code == 0 and (out / "checkpoint.safetensors").read_bytes() != before["checkpoint.safetensors"]
    assert json.loads((out / "run.json").read_text())["run_id"] != json.loads(before["run.json"])["run_id"]


def test_resuming_a_finished_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--epochs", "1", "--out", str(out)] + TINY, capsys)[0] == 0
    code, _, err = run(["train", "--epochs", "1", "--resume", str(out)] + TINY, capsys)
    assert code == 2 and "nothing to train: the checkpoint is at epoch 1 and --epochs 1" in err
    code, _, err = run(["train", "--epochs", "3", "--stop-after", "1", "--resume", str(out)] + TINY, capsys)
    assert code == 2 and "--stop-after 1; pass a larger --stop-after" in err


# -- user errors: one line, exit 2, before training (issue 12 items 13 and 14) ---------------------------
def one_line_error(argv, capsys):
    """stderr of a refused command line, which must be one line, with exit code 2."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    assert code == 2, (argv, out)
    assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err
    assert "epoch" not in out.out  # refused before training
    return out.err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["train", "--epochs", "-2"], "argument --epochs: expected a positive integer, got '-2'"),
    (["train", "--stop-after", "0"], "argument --stop-after: expected a positive integer, got '0'"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
    (["train", "--seed", str(2 ** 32)], "argument --seed: expected an integer from 0 to 4294967295"),
    (["train", "--batch-size", "abc"], "argument --batch-size: expected a positive integer or 'full'"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer or 'full'"),
    (["train", "--hidden", "a,b"], "argument --hidden: expected comma-separated integers"),
    (["compare-optimizers", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["compare-optimizers", "--seed", "-1"], "argument --seed: expected an integer from 0"),
    (["optimizer-paths", "--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
])
def test_bad_flags_are_named_in_one_line(argv, expected, capsys):
    assert expected in one_line_error(argv, capsys)


def test_library_settings_are_checked_too():
    from backprop_gpu.app.demos import compare_optimizers
    from backprop_gpu.app.train import TrainConfig, Trainer

    for kw, msg in ((dict(epochs=0), "--epochs must be a positive integer, got 0"),
                    (dict(stop_after=0), "--stop-after must be a positive integer"),
                    (dict(seed=-1), "--seed must be an integer from 0 to 4294967295, got -1")):
        with pytest.raises(ValueError, match=msg):
            Trainer(TrainConfig(**kw))
    with pytest.raises(ValueError, match="--epochs must be a positive integer, got 0"):
        compare_optimizers(epochs=0)  # was: IndexError after ten trainings of nothing


def test_output_paths_that_are_files_are_refused(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("")
    assert f"--out {f} is a file, not a directory" in one_line_error(["train", "--out", str(f)] + TINY, capsys)
    assert f"{f} is a file" in one_line_error(["train", "--out", str(f / "sub")] + TINY, capsys)
    for demo in (["compare-optimizers", "--epochs", "1"], ["optimizer-paths", "--steps", "1"]):
        assert f"--out {f} is a file" in one_line_error(demo + ["--out", str(f)], capsys)


def test_an_unwritable_output_directory_is_found_before_training(tmp_path, capsys):
    from test_rundir import unwritable

    d = tmp_path / "ro"
    d.mkdir()
    with unwritable(d):
        err = one_line_error(["train", "--out", str(d)] + TINY, capsys)
        assert f"cannot write to the run directory {d}" in err
        err = one_line_error(["train", "--runs-dir", str(d)] + TINY, capsys)
        assert f"cannot create the run directory {d}" in err
        err = one_line_error(["compare-optimizers", "--out", str(d), "--device", "numpy"], capsys)
        assert f"cannot write to the run directory {d}" in err


def test_a_failed_save_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    def full_disk(path, tensors, meta):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save", full_disk)
    out = tmp_path / "run"
    code, _, err = run(["train", "--epochs", "2", "--out", str(out)] + TINY, capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"cannot write the run's outputs in {out} after epoch 1: No space left on device" in err


def write_mnist(root, train_labels, test_labels, dtype=np.uint8, images=True):
    from test_data import write_idx

    rng = np.random.default_rng(0)
    for split, labels in (("train", train_labels), ("t10k", test_labels)):
        n = len(labels)
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", np.asarray(labels, dtype=dtype))


def test_bad_labels_are_refused_before_training(tmp_path, capsys):
    mnist = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--device", "numpy", "--out",
             str(tmp_path / "out")]
    write_mnist(tmp_path, [0, 1, -1, 2, -1, 1], [0, 1], dtype=">i4")
    err = one_line_error(mnist, capsys)
    assert "'mnist/train': 2 of 6 labels are negative (-1)" in err
    write_mnist(tmp_path, [0, 1, 2, 1], [0, 3, 5, 3, 1], dtype=">i4")  # was: an IndexError after an epoch
    err = one_line_error(mnist, capsys)
    assert "'mnist/t10k': 3 of 5 test labels (3, 5) lie outside the training classes 0-2" in err
    assert not (tmp_path / "out").exists()


def test_an_empty_mnist_file_is_refused(tmp_path, capsys):
    mnist = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--device", "numpy", "--out",
             str(tmp_path / "out")]
    write_mnist(tmp_path, [], [], dtype=np.uint8)  # headers saying 0 images: was "cannot reshape array of size 0"
    assert "the IDX files hold no images (images of shape (0, 4, 4))" in one_line_error(mnist, capsys)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    assert "not an IDX file" in one_line_error(mnist, capsys)


def test_help_shows_every_default(monkeypatch, capsys):

    from backprop_gpu.app.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    for command, defaults in (("train", ["(default: digits)", "(default: 15)", "(default: 32)", "(default: 0)",
                                         "(default: runs)", "(default: 64)", "(default: a new directory under"]),
                              ("compare-optimizers", ["(default: 10)", "(default: runs/compare)"]),
                              ("optimizer-paths", ["(default: 500)", "(default: runs/paths)"])):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for d in defaults:
            assert d in text, (command, d)
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        shown = [a for a in sub._actions if a.option_strings and a.nargs != 0]  # options that take a value
        marks = [" " + sub._get_formatter()._format_action_invocation(a) + " " for a in shown] + [None]
        pos = text.index("options:")
        for action, mark, following in zip(shown, marks, marks[1:]):  # each one's entry states its default
            pos = text.index(mark, pos)
            entry = text[pos:text.index(following, pos) if following else None]
            assert "default" in entry, (command, entry)


def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_identically(tmp_path, capsys):
    import re
    import shlex
    import signal
    import subprocess
    import sys
    import time

    # batch 1: an epoch of 1,347 steps, long enough for the signal to land inside one
    common = ["--dataset", "digits", "--hidden", "8", "--batch-size", "1", "--epochs", "3", "--device", "numpy",
              "--no-progress", "--scheduler", "warmup"]
    out = tmp_path / "stopped"
    p = subprocess.Popen([sys.executable, "-u", "-m", "backprop_gpu.app.cli", "train", "--out", str(out), *common],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith("epoch   1/3"):
                time.sleep(0.2)
                p.send_signal(signal.SIGINT)
        stdout, stderr = "".join(lines), p.stderr.read()
        p.wait(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, (stdout, stderr)
    m = re.search(r"^interrupted at epoch (\d) step (\d+); resume with: (backprop-gpu train --resume (\S+) .*)$",
                  stdout, re.M)
    assert m, stdout
    assert "Traceback" not in stderr and int(m[1]) >= 2 and m[4] == str(out)
    _, meta = checkpoint.load(out / "checkpoint.safetensors")
    assert meta["extra"]["epoch"] == int(m[1]) - 1
    assert meta["extra"].get("position", {"steps": 0})["steps"] == int(m[2])
    argv = shlex.split(m[3])
    code, resumed, _ = run(argv[1:], capsys)  # the printed command, as printed
    assert code == 0 and "epoch   3/3" in resumed
    straight = tmp_path / "straight"
    assert run(["train", "--out", str(straight), *common], capsys)[0] == 0
    a, b = params_of(straight), params_of(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    def rows(d):
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_csv(d / "metrics.csv")]
    assert rows(straight) == rows(out) and len(rows(out)) == 3
