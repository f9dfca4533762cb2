"""The training loop behind ``backprop-gpu train``: data, model, optimizer,
progress, metrics.csv, curves and checkpoints, resumable bit-for-bit on CPU."""
from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint, models, optim
from .autograd import no_grad
from .backends import get_backend, manual_seed
from .data import DataLoader, load
from .nn import functional as F

#: a learning rate that trains the default MLP on digits well, per optimizer
DEFAULT_LR = {"sgd": 0.1, "adagrad": 0.05, "adadelta": 1.0, "rmsprop": 1e-3, "adam": 3e-3, "adamw": 3e-3}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (saved in checkpoints and metrics)."""

    dataset: str = "digits"
    model: str = "mlp"
    hidden: tuple = (64,)
    optimizer: str = "adam"
    lr: float | None = None
    batch_size: int | None = 32
    epochs: int = 15
    device: str = "auto"
    seed: int = 0
    out: str = "runs/latest"
    resume: str | None = None
    data_dir: str | None = None
    progress: bool = True

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


CHECKPOINT = "checkpoint.safetensors"
FIELDS = ["epoch", "train_loss", "train_metric", "test_loss", "test_metric", "metric", "samples_per_s", "lr"]


class Trainer:
    """Builds the run from a :class:`TrainConfig`; :meth:`fit` trains it."""

    def __init__(self, cfg: TrainConfig, log=print, is_main: bool = True, rank: int = 0, world_size: int = 1,
                 after_backward=None):
        if cfg.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(optim.OPTIMIZERS)}")
        self.cfg, self.log, self.is_main = cfg, log, is_main
        self.after_backward = after_backward
        self.backend = get_backend(cfg.device)
        manual_seed(cfg.seed)
        self.train_set, self.test_set = load(cfg.dataset, cfg.data_dir)
        self.classify = self.train_set.y.dtype.kind in "iu"
        n_out = self.train_set.num_classes if self.classify else self.train_set.y.shape[1]
        self.model = models.build(cfg.model, self.train_set.x.shape[1], n_out, cfg.hidden).to(self.backend)
        self.opt = optim.OPTIMIZERS[cfg.optimizer](self.model.parameters(), lr=cfg.resolved_lr())
        self.loader = DataLoader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=self.backend,
                                 rank=rank, world_size=world_size)
        self.eval_loader = DataLoader(self.test_set, 512, device=self.backend)
        self.train_eval_loader = DataLoader(self.train_set, 512, device=self.backend)
        self.out = Path(cfg.out)
        self.epoch = 0
        self.rows: list[dict] = []
        if cfg.resume:
            self._resume(cfg.resume)

    # -- pieces ------------------------------------------------------------------
    def loss_fn(self, pred, y):
        return F.cross_entropy(pred, y) if self.classify else F.mse_loss(pred, y)

    def evaluate(self, loader) -> tuple[float, float]:
        """(mean loss, accuracy or R²) over a loader, in eval mode."""
        self.model.eval()
        total, n, hits, ys, preds = 0.0, 0, 0, [], []
        with no_grad():
            for x, y in loader:
                pred = self.model(x)
                total += self.loss_fn(pred, y).item() * len(y)
                n += len(y)
                if self.classify:
                    hits += int((pred.argmax(axis=1).numpy() == y.numpy()).sum())
                else:
                    ys.append(y.numpy())
                    preds.append(pred.numpy())
        self.model.train()
        if self.classify:
            return total / n, hits / n
        y, p = np.concatenate(ys), np.concatenate(preds)
        return total / n, float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())

    def _resume(self, path):
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT
        extra = checkpoint.restore(path, self.model, self.opt)
        if extra.get("config", {}).get("model") not in (None, self.cfg.model):
            raise checkpoint.CheckpointError(f"checkpoint {path} is for model {extra['config']['model']!r}")
        self.epoch = int(extra["epoch"])
        self.loader.load_state_dict(extra["loader"])
        self.backend.set_rng_state(extra["backend_rng"])
        self.rows = list(extra.get("rows", []))
        self.log(f"resumed from {path} after epoch {self.epoch}")

    def save_checkpoint(self):
        cfg = dataclasses.asdict(self.cfg)
        cfg["hidden"] = list(cfg["hidden"])
        extra = {"epoch": self.epoch, "loader": self.loader.state_dict(), "backend_rng": self.backend.rng_state(),
                 "config": cfg, "rows": self.rows}
        tensors, meta = checkpoint.pack(self.model, self.opt, extra=extra)
        checkpoint.save(self.out / CHECKPOINT, tensors, meta)

    def _write_metrics(self):
        with open(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(self.rows)

    # -- the loop ---------------------------------------------------------------
    def fit(self) -> dict:
        """Train up to ``cfg.epochs`` epochs (continuing after a resumed epoch); returns a summary."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        metric = "accuracy" if self.classify else "r2"
        t_start = time.perf_counter()
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            bar = tqdm(self.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                       disable=not (cfg.progress and self.is_main), file=sys.stderr)
            for x, y in bar:
                self.opt.zero_grad()
                loss = self.loss_fn(self.model(x), y)
                loss.backward()
                if self.after_backward is not None:
                    self.after_backward(self.opt)
                self.opt.step()
                seen += len(y)
                loss_sum += loss.item() * len(y)
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.close()
            self.backend.synchronize()
            rate = seen / (time.perf_counter() - t0)
            self.epoch = epoch
            if not self.is_main:
                continue
            train_loss, train_metric = self.evaluate(self.train_eval_loader)
            test_loss, test_metric = self.evaluate(self.eval_loader)
            row = {"epoch": epoch, "train_loss": round(train_loss, 6), "train_metric": round(train_metric, 6),
                   "test_loss": round(test_loss, 6), "test_metric": round(test_metric, 6), "metric": metric,
                   "samples_per_s": round(rate, 1), "lr": self.opt.param_groups[0]["lr"]}
            self.rows.append(row)
            fmt = (lambda v: f"{100 * v:5.1f}%") if self.classify else (lambda v: f"{v:.4f}")
            self.log(f"epoch {epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train {metric} {fmt(train_metric)}  "
                     f"test {metric} {fmt(test_metric)}  {rate:,.0f} samples/s")
            self._write_metrics()
            self.save_checkpoint()
        wall = time.perf_counter() - t_start
        summary = {"test_metric": self.rows[-1]["test_metric"] if self.rows else float("nan"), "metric": metric,
                   "wall_s": wall, "device": f"{self.backend.device} ({self.backend.name})", "epochs": self.epoch}
        if self.is_main and self.rows:
            from .plots import training_curves

            training_curves(self.rows, self.out / "curves.png",
                            f"{cfg.model} on {cfg.dataset} with {cfg.optimizer} (lr {cfg.resolved_lr():g})")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            shown = f"{100 * summary['test_metric']:.2f}%" if self.classify else f"{summary['test_metric']:.4f}"
            self.log(f"done: test {metric} {shown} | wall time {wall:.1f} s | device {summary['device']} | "
                     f"outputs in {self.out}/")
        return summary
