"""The ``backprop-gpu`` command line: train, compare-optimizers, optimizer-paths."""
from __future__ import annotations

import argparse
import logging
import sys

from .. import optim
from .train import SCHEDULERS


def _hidden(s: str) -> tuple:
    try:
        sizes = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated integers like 16,16, got {s!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden needs positive layer widths, got {s!r}")
    return sizes


def _batch(s: str):
    if s.lower() in ("none", "full", "all"):
        return None
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("--batch-size must be >= 1, or 'full' for batch gradient descent")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backprop-gpu", description="Train neural networks with backprop_gpu.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier (default: an MLP on the bundled digits)")
    t.add_argument("--dataset", default="digits", choices=["digits", "mnist", "spirals", "linear"])
    t.add_argument("--data-dir", default=None, help="directory of MNIST IDX files (for --dataset mnist)")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    t.add_argument("--hidden", type=_hidden, default=(64,), help="MLP hidden widths, e.g. 16,16")
    t.add_argument("--optimizer", default="adam", choices=sorted(optim.OPTIMIZERS))
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: one tuned per optimizer)")
    t.add_argument("--momentum", type=float, default=None, help="momentum (sgd, rmsprop)")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd with --momentum)")
    t.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: the optimizer's)")
    t.add_argument("--scheduler", default="none", choices=list(SCHEDULERS),
                   help="learning-rate schedule: " + "; ".join(f"{k}: {v}" for k, v in SCHEDULERS.items()))
    t.add_argument("--batch-size", type=_batch, default=32, help="1: stochastic, k: mini-batch, full: batch GD")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or a backend name")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/latest", help="directory for metrics.csv, curves.png, checkpoints")
    t.add_argument("--resume", default=None, help="checkpoint file or run directory to continue from")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop after this epoch as if interrupted (the schedule still spans --epochs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    c = sub.add_parser("compare-optimizers", help="every optimizer on one model from one initialisation")
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--dataset", default="digits", choices=["digits", "spirals"])
    c.add_argument("--hidden", type=_hidden, default=(64,), help="MLP hidden widths, e.g. 16,16")
    c.add_argument("--device", default="auto")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="runs/compare")

    o = sub.add_parser("optimizer-paths", help="optimizer trajectories on 2-D loss surfaces")
    o.add_argument("--steps", type=int, default=500, help="optimizer steps per path")
    o.add_argument("--out", default="runs/paths")
    return p


def train_config(args, device=None):
    """The :class:`~backprop_gpu.app.train.TrainConfig` of parsed ``train`` arguments; ``device`` overrides ``--device``."""
    from .train import TrainConfig

    return TrainConfig(dataset=args.dataset, model=args.model, hidden=args.hidden, optimizer=args.optimizer,
                       lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                       device=args.device if device is None else device, seed=args.seed, out=args.out,
                       resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress,
                       momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                       scheduler=args.scheduler, stop_after=args.stop_after)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "train":
            from ..distributed import setup_for_training
            from .train import Trainer

            dist = setup_for_training(args.device)
            if not dist.is_main:
                logging.getLogger("backprop_gpu").setLevel(logging.WARNING)  # rank 0 alone reports
            cfg = train_config(args, dist.device)
            log = print if dist.is_main else (lambda *a, **k: None)
            trainer = Trainer(cfg, log=log, is_main=dist.is_main, rank=dist.rank, world_size=dist.world_size,
                              after_backward=dist.after_backward)
            dist.prepare(trainer.model)
            # weights each rank's gradient by its share of an unevenly split last batch
            trainer.loader = dist.wrap_loader(trainer.loader)
            cfg = trainer.cfg  # a resumed run's hyperparameters are the checkpoint's
            log(f"training {cfg.model} on {cfg.dataset} ({len(trainer.train_set)} train / {len(trainer.test_set)} "
                f"test) with {cfg.optimizer} lr {cfg.resolved_lr():g}"
                + (f" ({cfg.scheduler} schedule)" if cfg.scheduler != "none" else "")
                + f", batch {cfg.batch_size}, on "
                f"{trainer.backend.device} ({trainer.backend.name})"
                + (f", {dist.world_size} ranks" if dist.world_size > 1 else ""))
            trainer.fit()
        elif args.command == "compare-optimizers":
            from .demos import compare_optimizers

            compare_optimizers(out=args.out, epochs=args.epochs, dataset=args.dataset, hidden=args.hidden,
                               device=args.device, seed=args.seed)
        elif args.command == "optimizer-paths":
            from .demos import optimizer_paths

            optimizer_paths(out=args.out, steps=args.steps)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"backprop-gpu: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
