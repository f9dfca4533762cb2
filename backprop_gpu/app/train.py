"""The training loop behind ``backprop-gpu train``: data, model, optimizer,
progress, metrics.csv, curves and checkpoints, resumable bit-for-bit on CPU."""
from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .. import optim
from . import checkpoint, models
from ..tape.mode import no_grad
from ..array import get_backend, manual_seed
from ..utils.data import DataLoader
from .data import load
from ..nn import functional as F

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
    momentum: float | None = None
    nesterov: bool = False
    weight_decay: float | None = None
    scheduler: str = "none"
    stop_after: int | None = None  # stop after this epoch, as if interrupted (continue with ``resume``)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


#: ``--scheduler`` choices: what each does, for the CLI's help
SCHEDULERS = {
    "none": "constant learning rate",
    "step": "StepLR: halve the lr every epochs/4 epochs",
    "exponential": "ExponentialLR: lr *= 0.9 each epoch",
    "cosine": "CosineAnnealingLR down to 0 over the run's epochs",
    "warmup": "LinearLR: linear warm-up from lr/10 over the first epoch's steps",
    "plateau": "ReduceLROnPlateau: halve the lr when the train loss stalls for 2 epochs",
}
#: the configuration a checkpoint must share with the run that resumes it
RESUME_MUST_MATCH = ("dataset", "model", "hidden", "optimizer", "scheduler")
#: hyperparameters a resume takes from the checkpoint (asking for other values is an error)
RESUME_KEEPS = ("lr", "momentum", "weight_decay")


def make_optimizer(cfg: TrainConfig, params):
    """The optimizer named by ``cfg`` with its lr, and momentum/nesterov/weight_decay where given."""
    cls = optim.OPTIMIZERS[cfg.optimizer]
    kw = {"lr": cfg.resolved_lr()}
    if cfg.momentum is not None:
        kw["momentum"] = cfg.momentum
    if cfg.nesterov:
        kw["nesterov"] = True
    if cfg.weight_decay is not None:
        kw["weight_decay"] = cfg.weight_decay
    takes = inspect.signature(cls.__init__).parameters
    bad = [k for k in kw if k not in takes]
    if bad:
        raise ValueError(f"optimizer {cfg.optimizer} takes no {' or '.join(bad)}; it takes "
                         f"{', '.join(k for k in takes if k not in ('self', 'params', 'foreach', 'fused'))}")
    return cls(params, **kw)


def make_scheduler(cfg: TrainConfig, opt, steps_per_epoch: int):
    """``(scheduler or None, per_step)`` for ``cfg.scheduler``; ``per_step`` schedulers step after each batch."""
    from ..optim import lr_scheduler as S

    name = cfg.scheduler
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if name == "none":
        return None, False
    if name == "step":
        return S.StepLR(opt, step_size=max(1, cfg.epochs // 4), gamma=0.5), False
    if name == "exponential":
        return S.ExponentialLR(opt, gamma=0.9), False
    if name == "cosine":
        return S.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs)), False
    if name == "warmup":
        return S.LinearLR(opt, start_factor=0.1, total_iters=max(1, steps_per_epoch)), True
    return S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2), False


CHECKPOINT = "checkpoint.safetensors"
BEST_CHECKPOINT = "best.safetensors"
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
        self.opt = make_optimizer(cfg, self.model.parameters())
        self.loader = DataLoader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=self.backend,
                                 rank=rank, world_size=world_size)
        if cfg.scheduler == "plateau" and world_size > 1:
            raise ValueError("--scheduler plateau follows a loss measured on rank 0 alone; use another scheduler "
                             "with more than one rank")
        self.scheduler, self.schedule_per_step = make_scheduler(cfg, self.opt, len(self.loader))
        self.eval_loader = DataLoader(self.test_set, 512, device=self.backend)
        self.train_eval_loader = DataLoader(self.train_set, 512, device=self.backend)
        self.out = Path(cfg.out)
        self.epoch = 0
        self.rows: list[dict] = []
        self.best = -math.inf  # the best test metric so far (accuracy or R², higher is better)
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

    def _config_dict(self) -> dict:
        cfg = dataclasses.asdict(self.cfg)
        cfg["hidden"] = list(cfg["hidden"])
        return cfg

    def _check_resumable(self, extra: dict) -> None:
        """Refuse (before anything is loaded) a checkpoint from a run configured differently."""
        for key in ("epoch", "loader", "backend_rng"):
            extra[key]  # a KeyError names the missing entry
        saved, mine = extra.get("config", {}), self._config_dict()
        keys = [k for k in RESUME_MUST_MATCH if k != "hidden" or mine["model"] == "mlp"]  # only MLPs use hidden
        diffs = [f"{k} {saved[k]!r} (checkpoint) vs {mine[k]!r} (now)" for k in keys
                 if k in saved and saved[k] != mine[k]]
        if diffs:
            raise ValueError("it comes from a run with another " + ", ".join(diffs))
        # the optimizer's state was built on the checkpoint's hyperparameters, and they are what a resumed
        # run uses: a different value asked for explicitly is refused, never silently ignored
        asked = [f"--{k.replace('_', '-')} {mine[k]!r} (the checkpoint has {saved.get(k)!r})"
                 for k in RESUME_KEEPS if mine[k] is not None and saved.get(k) != mine[k]]
        if asked:
            raise ValueError("a resumed run keeps the checkpoint's hyperparameters; drop " + ", ".join(asked)
                             + " or start a new run")

    def _resume(self, path):
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT
        extra = checkpoint.restore(path, self.model, self.opt, self.scheduler, check_extra=self._check_resumable)
        saved = extra.get("config", {})
        # what the run now uses (restored with the optimizer), so that logs and plots print it
        self.cfg = dataclasses.replace(self.cfg, **{k: saved[k] for k in RESUME_KEEPS if k in saved})
        self.epoch = int(extra["epoch"])
        self.loader.load_state_dict(extra["loader"])
        self.backend.set_rng_state(extra["backend_rng"])
        self.rows = list(extra.get("rows", []))
        self.best = max((r["test_metric"] for r in self.rows), default=-math.inf)
        self.log(f"resumed from {path} after epoch {self.epoch}")

    def save_checkpoint(self, name: str = CHECKPOINT):
        extra = {"epoch": self.epoch, "loader": self.loader.state_dict(), "backend_rng": self.backend.rng_state(),
                 "config": self._config_dict(), "rows": self.rows}
        tensors, meta = checkpoint.pack(self.model, self.opt, self.scheduler, extra=extra)
        checkpoint.save(self.out / name, tensors, meta)

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
        last = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
        for epoch in range(self.epoch + 1, last + 1):
            t0, seen = time.perf_counter(), 0
            lr = self.opt.param_groups[0]["lr"]  # the lr of the epoch's first step
            show = cfg.progress and self.is_main
            bar = tqdm(self.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch", disable=not show,
                       file=sys.stderr)
            for i, (x, y) in enumerate(bar):
                self.opt.zero_grad()
                loss = self.loss_fn(self.model(x), y)
                loss.backward()
                if self.after_backward is not None:
                    self.after_backward(self.opt)
                self.opt.step()
                if self.schedule_per_step:
                    self.scheduler.step()
                seen += len(y)
                if show and i % 10 == 0:  # .item() waits for the device: not on every step
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.close()
            self.backend.synchronize()
            rate = seen / (time.perf_counter() - t0)
            self.epoch = epoch
            if self.scheduler is not None and not self.schedule_per_step and cfg.scheduler != "plateau":
                self.scheduler.step()
            if not self.is_main:
                continue
            train_loss, train_metric = self.evaluate(self.train_eval_loader)
            test_loss, test_metric = self.evaluate(self.eval_loader)
            if cfg.scheduler == "plateau":
                self.scheduler.step(train_loss)  # the train loss: the test set takes no part in training
            row = {"epoch": epoch, "train_loss": round(train_loss, 6), "train_metric": round(train_metric, 6),
                   "test_loss": round(test_loss, 6), "test_metric": round(test_metric, 6), "metric": metric,
                   "samples_per_s": round(rate, 1), "lr": lr}
            self.rows.append(row)
            fmt = (lambda v: f"{100 * v:5.1f}%") if self.classify else (lambda v: f"{v:.4f}")
            self.log(f"epoch {epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train {metric} {fmt(train_metric)}  "
                     f"test {metric} {fmt(test_metric)}  {rate:,.0f} samples/s")
            self._write_metrics()
            self.save_checkpoint()
            if row["test_metric"] > self.best:
                self.best = row["test_metric"]
                self.save_checkpoint(BEST_CHECKPOINT)
        wall = time.perf_counter() - t_start
        summary = {"test_metric": self.rows[-1]["test_metric"] if self.rows else float("nan"), "metric": metric,
                   "best_test_metric": self.best if self.rows else float("nan"), "wall_s": wall,
                   "device": f"{self.backend.device} ({self.backend.name})", "epochs": self.epoch}
        if self.is_main and self.rows:
            from .plots import training_curves

            training_curves(self.rows, self.out / "curves.png",
                            f"{cfg.model} on {cfg.dataset} with {cfg.optimizer} (lr {cfg.resolved_lr():g}"
                            + (f", {cfg.scheduler} schedule)" if cfg.scheduler != "none" else ")"))
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            checkpoint.remove_stale_temp_files(self.out)  # a clean exit leaves no killed save's debris
            shown = f"{100 * summary['test_metric']:.2f}%" if self.classify else f"{summary['test_metric']:.4f}"
            if self.epoch < cfg.epochs:
                self.log(f"stopped after epoch {self.epoch} of {cfg.epochs}; continue with --resume {self.out}")
            self.log(f"done: test {metric} {shown} | wall time {wall:.1f} s | device {summary['device']} | "
                     f"outputs in {self.out}/")
        return summary
