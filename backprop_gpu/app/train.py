"""The training loop behind ``backprop-gpu train``: data, model, optimizer,
progress, metrics.csv, curves and checkpoints, resumable bit-for-bit on CPU."""
from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import optim
from . import checkpoint, models, rundir
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
    out: str | None = None  # the run directory itself; None: runs_dir/name (see rundir)
    resume: str | None = None
    data_dir: str | None = None
    progress: bool = True
    momentum: float | None = None
    nesterov: bool = False
    weight_decay: float | None = None
    scheduler: str = "none"
    stop_after: int | None = None  # stop after this epoch, as if interrupted (continue with ``resume``)
    name: str | None = None  # the run directory's name under runs_dir (None: the start time)
    runs_dir: str | None = None  # where new run directories go, with a ``latest`` link (None: ``runs``)
    overwrite: bool = False  # a new run may take over a directory holding another run's outputs

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
#: the exit status of a run stopped by Ctrl-C (128 + SIGINT, what a shell reports)
INTERRUPTED = 130
_IMPORTED = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started, start-up and imports included (from ``/proc`` on Linux;
    elsewhere since this module was imported, which leaves out the interpreter's start and the imports
    before it)."""
    try:
        with open("/proc/self/stat") as f:  # field 22, start time in clock ticks after boot
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - start
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def check_config(cfg: TrainConfig) -> None:
    """Refuse (``ValueError`` naming the flag) settings under which a run would do nothing or fail later."""
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {cfg.epochs!r}")
    if cfg.stop_after is not None and (not isinstance(cfg.stop_after, int) or cfg.stop_after < 1):
        raise ValueError(f"--stop-after must be a positive integer (an epoch), got {cfg.stop_after!r}")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2 ** 32:
        raise ValueError(f"--seed must be an integer from 0 to {2 ** 32 - 1}, got {cfg.seed!r}")


def resume_command(cfg: TrainConfig, path, stop_after: bool = True) -> str:
    """The ``backprop-gpu train`` command line that continues ``cfg``'s run from ``path``.

    It repeats the settings that differ from the defaults and that a resumed run must share (data,
    model, optimizer, schedule, batch size, epochs, device), leaving out the hyperparameters the
    checkpoint keeps; ``stop_after=False`` drops ``--stop-after`` (to run on past it)."""
    default, args = TrainConfig(), ["backprop-gpu", "train", "--resume", str(path)]
    fields = ["dataset", "data_dir", "model", "hidden", "optimizer", "nesterov", "scheduler", "batch_size",
              "epochs", "device"] + (["stop_after"] if stop_after else [])
    for field in fields:
        v = getattr(cfg, field)
        if v == getattr(default, field) or (field == "hidden" and cfg.model != "mlp"):
            continue
        flag = "--" + field.replace("_", "-")
        if v is True:
            args.append(flag)
        elif field == "hidden":
            args += [flag, ",".join(map(str, v))]
        else:
            args += [flag, "full" if v is None else str(v)]
    if not cfg.progress:
        args.append("--no-progress")
    return shlex.join(args)


class _TrainLoader(DataLoader):
    """The training :class:`DataLoader`, remembering its generator state from before each epoch's shuffle.

    A run stopped inside an epoch saves that state with the number of steps taken, so that the
    resumed run redraws the same order and skips the steps already done (see ``Trainer.fit``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_start_state = self.state_dict()

    def __iter__(self):
        self.epoch_start_state = copy.deepcopy(self.state_dict())  # the generator body draws the shuffle
        return super().__iter__()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epoch_start_state = copy.deepcopy(self.state_dict())


class _StopOnInterrupt:
    """Within ``with``: a first Ctrl-C (SIGINT) sets :attr:`requested`, for the training loop to stop at
    the end of the current step and save; a second one raises ``KeyboardInterrupt`` at once.

    Installed only in the main thread of a single-process run: the ranks of a distributed run would stop
    at different steps, so there a Ctrl-C ends the job as before."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C stops at once
        print("\nstopping at the end of this step to save a checkpoint (Ctrl-C again to stop now, unsaved)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        if self.enabled:
            # None: a handler not installed from Python; Python's own then takes the second Ctrl-C
            self._previous = signal.signal(signal.SIGINT, self._handler) or signal.default_int_handler
        return self

    def __exit__(self, *exc):
        if self.enabled and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self._previous)
        return False


class Trainer:
    """Builds the run from a :class:`TrainConfig`; :meth:`fit` trains it.

    Everything that can be checked is checked here, before anything is written: the settings, the
    output directory (see :mod:`~backprop_gpu.app.rundir`: a file, or another run's directory, is
    refused), the data's labels and the checkpoint to resume. :meth:`fit` makes the run directory
    (``out``: ``None`` until then for a new time-stamped one) and proves it writable before training.
    ``command`` is the command line recorded in the directory's ``run.json`` (default ``sys.argv``).
    """

    def __init__(self, cfg: TrainConfig, log=print, is_main: bool = True, rank: int = 0, world_size: int = 1,
                 after_backward=None, command=None):
        if cfg.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(optim.OPTIMIZERS)}")
        check_config(cfg)
        # where the outputs go, checked before anything loads; rank 0 alone writes, so it alone checks
        self.run = rundir.plan(cfg.out, cfg.name, cfg.runs_dir, cfg.resume, cfg.overwrite, check=is_main)
        self.command = list(sys.argv if command is None else command)
        self.cfg, self.log, self.is_main, self.world_size = cfg, log, is_main, world_size
        self.after_backward = after_backward
        self.backend = get_backend(cfg.device)
        manual_seed(cfg.seed)
        self.train_set, self.test_set = load(cfg.dataset, cfg.data_dir)
        self.classify = self.train_set.y.dtype.kind in "iu"
        n_out = self.train_set.num_classes if self.classify else self.train_set.y.shape[1]
        self.model = models.build(cfg.model, self.train_set.x.shape[1], n_out, cfg.hidden).to(self.backend)
        self.opt = make_optimizer(cfg, self.model.parameters())
        self.loader = self._train_loader = _TrainLoader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                                        device=self.backend, rank=rank, world_size=world_size)
        if cfg.scheduler == "plateau" and world_size > 1:
            raise ValueError("--scheduler plateau follows a loss measured on rank 0 alone; use another scheduler "
                             "with more than one rank")
        self.scheduler, self.schedule_per_step = make_scheduler(cfg, self.opt, len(self.loader))
        self.eval_loader = DataLoader(self.test_set, 512, device=self.backend)
        self.train_eval_loader = DataLoader(self.train_set, 512, device=self.backend)
        self.out = self.run.path
        self.epoch = 0
        self.rows: list[dict] = []
        self._warmed_up = False
        self.best = -math.inf  # the best test metric so far (accuracy or R², higher is better)
        self.resume_step = None  # (steps done, lr of the epoch's first step) of a run stopped inside an epoch
        if cfg.resume:
            self._resume(self.run.resume)  # a ``latest`` link resolved: the run it names now
            self.resume_step = self._position(self.run.resume)
            last = self.cfg.epochs if self.cfg.stop_after is None else min(self.cfg.epochs, self.cfg.stop_after)
            if self.epoch >= last:
                flag = (f"--epochs {self.cfg.epochs}" if last == self.cfg.epochs
                        else f"--stop-after {self.cfg.stop_after}")
                raise ValueError(f"nothing to train: the checkpoint is at epoch {self.epoch} and {flag}; "
                                 f"pass a larger {flag.split()[0]} to train on")

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
        """Refuse (before anything is loaded) a checkpoint from a run configured differently, or one
        whose run metadata is damaged: every entry ``_resume`` applies (epoch, data-loader and backend
        RNG states, metrics rows, config) is checked here, so that applying them cannot fail halfway.
        A bad entry raises :func:`checkpoint.refuse` naming it."""
        refuse = checkpoint.refuse
        for key in ("epoch", "loader", "backend_rng", "rows", "config"):
            if key not in extra:
                raise refuse(f"extra.{key}", "missing")
        epoch = extra["epoch"]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise refuse("extra.epoch", f"{epoch!r} is not an epoch count")
        loader, mine_loader = extra["loader"], self.loader.state_dict()
        if not isinstance(loader, dict) or set(loader) != set(mine_loader):
            got = f"entries {sorted(loader)}" if isinstance(loader, dict) else f"a {type(loader).__name__}"
            raise refuse("extra.loader", f"{got}, not a data loader state (a dict of {', '.join(mine_loader)})")
        checkpoint.check_generator_state("extra.loader.rng", loader["rng"], self.loader.rng)
        checkpoint.check_generator_state("extra.backend_rng", extra["backend_rng"], self.backend.generator)
        rows = extra["rows"]
        if not isinstance(rows, list) or len(rows) != epoch:
            got = f"{len(rows)} rows" if isinstance(rows, list) else f"a {type(rows).__name__}"
            raise refuse("extra.rows", f"{got}, not a list of the {epoch} epochs' metrics")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or set(r) != set(FIELDS):
                raise refuse(f"extra.rows[{i}]", f"not a metrics row (a dict of {', '.join(FIELDS)})")
            if r["epoch"] != i + 1 or not isinstance(r["epoch"], int):
                raise refuse(f"extra.rows[{i}].epoch", f"{r['epoch']!r}, expected {i + 1}")
            if not isinstance(r["test_metric"], (int, float)) or isinstance(r["test_metric"], bool):
                raise refuse(f"extra.rows[{i}].test_metric", f"{r['test_metric']!r} is not a number")
        saved, mine = extra["config"], self._config_dict()
        if not isinstance(saved, dict):
            raise refuse("extra.config", f"a {type(saved).__name__}, not a dict")
        keys = [k for k in RESUME_MUST_MATCH if k != "hidden" or mine["model"] == "mlp"]  # only MLPs use hidden
        for k in keys + list(RESUME_KEEPS):
            if k not in saved:
                raise refuse(f"extra.config.{k}", "missing")
        for k in RESUME_KEEPS:  # the resumed run's config takes these (logs and plots print them)
            v = saved[k]
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
                raise refuse(f"extra.config.{k}", f"{v!r} is not a number")
        diffs = [f"{k} {saved[k]!r} (checkpoint) vs {mine[k]!r} (now)" for k in keys if saved[k] != mine[k]]
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
        # restore checks model, optimizer, scheduler and (through _check_resumable) every entry applied
        # below before it changes anything, so a damaged checkpoint leaves this run as it was
        extra = checkpoint.restore(path, self.model, self.opt, self.scheduler, check_extra=self._check_resumable)
        saved = extra["config"]
        # what the run now uses (restored with the optimizer), so that logs and plots print it
        self.cfg = dataclasses.replace(self.cfg, **{k: saved[k] for k in RESUME_KEEPS})
        self.epoch = extra["epoch"]
        self.loader.load_state_dict(extra["loader"])
        self.backend.set_rng_state(extra["backend_rng"])
        self.rows = list(extra["rows"])
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

    # -- a position inside an epoch ----------------------------------------------
    # A run stopped inside an epoch saves the usual checkpoint (epoch = the epochs completed) with the
    # loader's generator rewound to before that epoch's shuffle and a ``position`` entry: the steps done
    # and the lr of the epoch's first step. A resumed run redraws the same order, skips those steps and
    # continues bit for bit.
    def _save_position(self, steps: int, lr: float) -> Path:
        extra = {"epoch": self.epoch, "loader": self._train_loader.epoch_start_state,
                 "backend_rng": self.backend.rng_state(), "config": self._config_dict(), "rows": self.rows,
                 "position": {"steps": steps, "lr": lr}}
        tensors, meta = checkpoint.pack(self.model, self.opt, self.scheduler, extra=extra)
        checkpoint.save(self.out / CHECKPOINT, tensors, meta)
        return self.out / CHECKPOINT

    def _position(self, path):
        """``(steps, lr)`` of a checkpoint saved inside an epoch (None otherwise), from its header alone."""
        from safetensors import safe_open

        path = Path(path)
        path = path / CHECKPOINT if path.is_dir() else path
        with safe_open(str(path), framework="numpy") as f:  # restore has read and checked it already
            pos = json.loads(f.metadata()["backprop_gpu"]).get("extra", {}).get("position")
        if pos is None:
            return None
        steps, lr = (pos.get("steps"), pos.get("lr")) if isinstance(pos, dict) else (None, None)
        if (not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < len(self.loader)
                or not isinstance(lr, (int, float)) or not math.isfinite(lr)):
            raise checkpoint.CheckpointError(f"checkpoint entry 'extra.position': {pos!r} is not a position "
                                             f"inside an epoch of {len(self.loader)} steps (in {path})")
        return steps, float(lr)

    def _write_outputs(self, epoch: int, write) -> None:
        """Run ``write()`` (metrics, checkpoints, plots), turning a failed write into one clear error."""
        try:
            write()
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise RuntimeError(f"cannot write the run's outputs in {self.out} after epoch {epoch}: "
                               f"{e.strerror or e}{where}; checkpoints are replaced atomically, so the last one "
                               "saved is intact") from None

    # -- the loop ---------------------------------------------------------------
    def fit(self) -> dict:
        """Train up to ``cfg.epochs`` epochs (continuing after a resumed epoch); returns a summary.

        The run directory is made and proved writable first. A Ctrl-C stops the run at the end of the
        current step and saves a checkpoint there, which ``--resume`` continues bit for bit; the summary
        then has ``interrupted: True`` and the log says how to resume. A failed write (a full disk) raises
        ``RuntimeError`` saying so."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.is_main:
            self.out = rundir.create(self.run, self.command, self.log)
            self.log(f"run directory {self.out}/")
        metric = "accuracy" if self.classify else "r2"
        t_start = time.perf_counter()
        last = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
        interrupted = None  # (epoch, steps done in it, lr of its first step) where a Ctrl-C stopped the run
        warm_up = not self._warmed_up  # this process's first epoch: kernels load or compile in it
        self._warmed_up = True
        with _StopOnInterrupt(self.world_size == 1) as stop:
            for epoch in range(self.epoch + 1, last + 1):
                # the lr of the epoch's first step, and the steps a run stopped inside this epoch has done
                skip, lr = self.resume_step or (0, self.opt.param_groups[0]["lr"])
                self.resume_step = None
                if stop.requested:
                    interrupted = (epoch, skip, lr)
                    break
                t0, seen, loss_sum = time.perf_counter(), 0, None
                show = cfg.progress and self.is_main
                bar = tqdm(self.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                           disable=not show, file=sys.stderr)
                steps = len(self.loader)
                for i, (x, y) in enumerate(bar):
                    if i < skip:
                        continue  # done before the run was stopped: the same batches, already trained on
                    self.opt.zero_grad()
                    loss = self.loss_fn(self.model(x), y)
                    loss.backward()
                    if self.after_backward is not None:
                        self.after_backward(self.opt)
                    self.opt.step()
                    if self.schedule_per_step:
                        self.scheduler.step()
                    seen += len(y)
                    if show:  # the running mean of the epoch's loss, summed on the device
                        part = loss.detach() * len(y)
                        loss_sum = part if loss_sum is None else loss_sum + part
                        if i % 10 == 0:  # .item() waits for the device: not on every step
                            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
                    if stop.requested and i + 1 < steps:
                        interrupted = (epoch, i + 1, lr)
                        break
                bar.close()
                if interrupted is not None:
                    break
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
                # the first epoch a process runs also loads (or compiles) its kernels: said, not hidden
                self.log(f"epoch {epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  train {metric} "
                         f"{fmt(train_metric)}  test {metric} {fmt(test_metric)}  {rate:,.0f} samples/s"
                         + (" (incl. warm-up)" if warm_up else ""))
                warm_up = False
                improved = row["test_metric"] > self.best

                def write():
                    self._write_metrics()
                    self.save_checkpoint()
                    if improved:
                        self.save_checkpoint(BEST_CHECKPOINT)
                self._write_outputs(epoch, write)
                if improved:
                    self.best = row["test_metric"]
        wall = time.perf_counter() - t_start
        summary = {"test_metric": self.rows[-1]["test_metric"] if self.rows else float("nan"), "metric": metric,
                   "best_test_metric": self.best if self.rows else float("nan"), "wall_s": wall,
                   "device": f"{self.backend.device} ({self.backend.name})", "epochs": self.epoch}
        if interrupted is not None:
            epoch, steps, lr = interrupted
            if self.is_main:
                self._write_outputs(self.epoch, lambda: self._save_position(steps, lr) if steps
                                    else self.save_checkpoint())
                checkpoint.remove_stale_temp_files(self.out)
                self.log(f"interrupted at epoch {epoch} step {steps}; resume with: {resume_command(cfg, self.out)}")
            if steps:  # a later fit() here continues from where the checkpoint does
                self._train_loader.load_state_dict(self._train_loader.epoch_start_state)
                self.resume_step = (steps, lr)
            return dict(summary, interrupted=True)
        if self.is_main and self.rows:
            from .plots import run_title, training_curves

            n_out = self.train_set.num_classes if self.classify else self.train_set.y.shape[1]
            widths = (self.train_set.x.shape[1], *cfg.hidden, n_out) if cfg.model == "mlp" else None
            extras = [f"momentum {cfg.momentum:g}"] if cfg.momentum is not None else []
            extras += ["Nesterov"] if cfg.nesterov else []
            extras += [f"weight decay {cfg.weight_decay:g}"] if cfg.weight_decay is not None else []
            extras += [f"{cfg.scheduler} schedule"] if cfg.scheduler != "none" else []
            title = run_title(cfg.model, widths, cfg.dataset, cfg.optimizer, cfg.resolved_lr(), cfg.batch_size,
                              len(self.train_set), extras)

            def write():
                training_curves(self.rows, self.out / "curves.png", title)
                (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            self._write_outputs(self.epoch, write)
            checkpoint.remove_stale_temp_files(self.out)  # a clean exit leaves no killed save's debris
            shown = (lambda v: f"{100 * v:.2f}%") if self.classify else (lambda v: f"{v:.4f}")
            best = max(self.rows, key=lambda r: r["test_metric"])  # the first epoch that reached it
            if self.epoch < cfg.epochs:
                self.log(f"stopped after epoch {self.epoch} of {cfg.epochs}; continue with: "
                         f"{resume_command(cfg, self.out, stop_after=False)}")
            trained = f"{wall:.2f}" if wall < 1 else f"{wall:.1f}"  # a 1-epoch run on digits takes ~0.05 s
            self.log(f"done: test {metric} {shown(summary['test_metric'])} (best {shown(best['test_metric'])} at "
                     f"epoch {best['epoch']}) | training {trained} s, {process_seconds():.1f} s since the process "
                     f"started | device {summary['device']} | outputs in {self.out}/")
        return dict(summary, interrupted=False)
