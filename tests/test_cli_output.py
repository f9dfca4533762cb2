"""What ``backprop-gpu train`` prints: the header, the progress bar's loss, the epoch lines, the final line."""
import csv
import re
import subprocess
import sys

import pytest

from backprop_gpu.app.cli import main
from backprop_gpu.app.data import digits
from backprop_gpu.app.train import TrainConfig, Trainer, process_seconds


def _train(argv, capsys):
    assert main(["train", "--no-progress"] + argv) == 0
    return capsys.readouterr().out.splitlines()


def test_header_names_the_device_asked_for_and_used_and_the_model(tmp_path, capsys):
    lines = _train(["--epochs", "1", "--hidden", "16", "--device", "numpy", "--out", str(tmp_path)], capsys)
    assert lines[0] == "device: asked for 'numpy', using cpu (numpy)"
    n_params = 64 * 16 + 16 + 16 * 10 + 10  # digits: 64 pixels, 10 classes
    assert lines[1] == f"model: mlp, {n_params:,} parameters: Linear(64, 16) > ReLU > Linear(16, 10)"
    assert lines[2].startswith("training mlp on digits (1347 train / 450 test) with adam lr 0.003, batch 32, on cpu")


def test_cnn_header_lists_its_layers(tmp_path, capsys):
    lines = _train(["--epochs", "1", "--model", "cnn", "--device", "numpy", "--out", str(tmp_path)], capsys)
    assert lines[1].startswith("model: cnn, ") and ("View(1, 8, 8) > Conv2d(1, 8, 3x3) > BatchNorm2d(8) > ReLU > "
                                                    "MaxPool2d(2) > Conv2d(8, 16, 3x3)") in lines[1]


def test_full_batch_prints_the_real_batch_size(tmp_path, capsys):
    lines = _train(["--epochs", "1", "--batch-size", "full", "--device", "numpy", "--out", str(tmp_path)], capsys)
    n = len(digits()[0])
    assert f", batch {n} (full batch), on cpu" in lines[2] and "batch None" not in "\n".join(lines)


def test_final_line_gives_the_best_epoch_and_the_time_since_start(tmp_path, capsys):
    lines = _train(["--epochs", "3", "--dataset", "spirals", "--hidden", "4", "--device", "numpy", "--lr", "0.5",
                    "--optimizer", "sgd", "--out", str(tmp_path)], capsys)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["test_metric"]))  # max() keeps the first of equal ones
    done = lines[-1]
    assert " s since the process started | device cpu (numpy) | outputs in " in done
    assert done.startswith(f"done: test accuracy {100 * float(rows[-1]['test_metric']):.2f}% "
                           f"(best {100 * float(best['test_metric']):.2f}% at epoch {best['epoch']}) | training ")
    times = re.search(r"\| training ([\d.]+) s, ([\d.]+) s since the process started \|", done)
    training, since_start = float(times[1]), float(times[2])
    assert 0 <= training <= since_start and since_start > 0  # shown to 0.1 s: a tiny run may show 0.0
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert epochs[0].endswith("samples/s (incl. warm-up)") and not any("warm-up" in ln for ln in epochs[1:])


def test_process_seconds_counts_from_the_process_start():
    code = ("import time; time.sleep(0.6)\n"
            "from backprop_gpu.app.train import process_seconds; print(process_seconds())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) >= 0.6  # the sleep came before the import: start-up is counted
    assert process_seconds() > 0


def test_progress_bar_shows_the_running_mean_of_the_epochs_loss(tmp_path, monkeypatch):
    """The bar's ``loss=`` at step i is the mean of the epoch's batch losses up to step i (weighted by
    batch size), not the last batch's."""
    import tqdm

    shown, losses = [], []

    class Bar:
        def __init__(self, iterable, **kw):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, loss, refresh=True):
            shown.append(float(loss))

        def close(self):
            pass

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    cfg = TrainConfig(dataset="spirals", hidden=(4,), device="numpy", epochs=1, batch_size=8, out=str(tmp_path),
                      progress=True)
    trainer = Trainer(cfg, log=lambda *a: None)
    plain = trainer.loss_fn

    def recording(pred, y):
        loss = plain(pred, y)
        if pred.requires_grad:  # a training step, not an evaluation
            losses.append((loss.item(), len(y)))
        return loss
    trainer.loss_fn = recording
    trainer.fit()
    assert len(shown) == (len(losses) + 9) // 10 and len(shown) >= 2
    for k, value in enumerate(shown):
        upto = losses[:10 * k + 1]
        mean = sum(v * n for v, n in upto) / sum(n for _, n in upto)
        assert value == pytest.approx(mean, abs=5e-5)  # shown to 4 decimals
    assert shown[-1] != pytest.approx(losses[10 * (len(shown) - 1)][0], abs=5e-5)
