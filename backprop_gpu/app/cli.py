"""The ``backprop-gpu`` command line: train, compare-optimizers, optimizer-paths, selftest."""
from __future__ import annotations

import argparse
import logging
import sys

from .. import optim
from .train import DEFAULT_LR, INTERRUPTED, SCHEDULERS


# Type functions: argparse prefixes their message with the flag ("argument --epochs: ..."), so they
# say what is expected and what was given.
def _hidden(s: str) -> tuple:
    try:
        sizes = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 16,16, got {s!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer widths like 16,16, got {s!r}")
    return sizes


def _positive(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = -1
    if not 0 <= v < 2 ** 32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {2 ** 32 - 1}, got {s!r}")
    return v


def _batch(s: str):
    if s.lower() in ("none", "full", "all"):
        return None
    try:
        return _positive(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'full' (batch gradient descent), "
                                         f"got {s!r}") from None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the problem, then where to read more), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless it states the default itself; on/off
    flags, off by default, show none."""

    def _get_help_string(self, action):
        help = action.help or ""
        if "default" in help or action.default is None or action.default is False or not action.option_strings:
            return help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="backprop-gpu", description="Train neural networks with backprop_gpu.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier (default: an MLP on the bundled digits)",
                       formatter_class=_Help,
                       description="Train a model; each run writes into a directory of its own "
                                   "(runs/<YYYYmmdd-HHMMSS>/, with runs/latest linking to the newest). "
                                   "Ctrl-C stops at the end of the current step and saves a checkpoint that "
                                   "--resume continues.")
    t.add_argument("--dataset", default="digits", choices=["digits", "mnist", "spirals", "linear"],
                   help="the data set")
    t.add_argument("--data-dir", default=None,
                   help="directory of MNIST IDX files (default: none; --dataset mnist needs it)")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"], help="the model")
    t.add_argument("--hidden", type=_hidden, default="64", help="MLP hidden widths, e.g. 16,16")
    t.add_argument("--optimizer", default="adam", choices=sorted(optim.OPTIMIZERS), help="the optimizer")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: one tuned per optimizer: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--momentum", type=float, default=None,
                   help="momentum (sgd, rmsprop; default: the optimizer's)")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd with --momentum)")
    t.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: the optimizer's)")
    t.add_argument("--scheduler", default="none", choices=list(SCHEDULERS),
                   help="learning-rate schedule: " + "; ".join(f"{k}: {v}" for k, v in SCHEDULERS.items()))
    t.add_argument("--batch-size", type=_batch, default=32, help="1: stochastic, k: mini-batch, full: batch GD")
    t.add_argument("--epochs", type=_positive, default=15, help="epochs to train")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or a backend name")
    t.add_argument("--seed", type=_seed, default=0, help="seed of the initialisation and the shuffling")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="the run directory itself, for metrics.csv, curves.png, checkpoints (default: a new "
                        "directory under --runs-dir; with --resume, the checkpoint's directory)")
    t.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="where new run directories go, each named by its start time, with a link 'latest' "
                        "to the newest (default: runs)")
    t.add_argument("--name", default=None,
                   help="name the run directory under --runs-dir (default: the start time, YYYYmmdd-HHMMSS)")
    t.add_argument("--overwrite", action="store_true",
                   help="let this run take over a directory that holds another run (whose outputs are deleted)")
    t.add_argument("--resume", default=None, metavar="PATH",
                   help="checkpoint file or run directory to continue from, e.g. runs/latest (default: none, "
                        "a new run); the run continues in that directory unless --out or --name says otherwise")
    t.add_argument("--stop-after", type=_positive, default=None, metavar="EPOCH",
                   help="stop after this epoch as if interrupted (default: none; the schedule still spans --epochs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    c = sub.add_parser("compare-optimizers", help="every optimizer on one model from one initialisation",
                       formatter_class=_Help)
    c.add_argument("--epochs", type=_positive, default=10, help="epochs per optimizer")
    c.add_argument("--dataset", default="digits", choices=["digits", "spirals"], help="the data set")
    c.add_argument("--hidden", type=_hidden, default="64", help="MLP hidden widths, e.g. 16,16")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or a backend name")
    c.add_argument("--seed", type=_seed, default=0, help="seed of the initialisation and the shuffling")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="directory for compare_optimizers.png")

    o = sub.add_parser("optimizer-paths", help="optimizer trajectories on 2-D loss surfaces", formatter_class=_Help)
    o.add_argument("--steps", type=_positive, default=500, help="optimizer steps per path")
    o.add_argument("--out", default="runs/paths", metavar="DIR", help="directory for optimizer_paths.png")

    s = sub.add_parser("selftest", help="check every backend here against the NumPy reference; --bench measures",
                       formatter_class=_Help)
    s.add_argument("--bench", action="store_true", help="also measure copy bandwidth, optimizer steps and the "
                   "MLP step beside torch (sized for a GPU; see --scale)")
    s.add_argument("--backends", default=None, metavar="NAMES",
                   help="comma-separated backends (default: every available one; --bench: the GPU ones, if any)")
    s.add_argument("--scale", type=float, default=1.0, help="multiply every bench size by this (0.01 on a CPU)")
    s.add_argument("--repeats", type=_positive, default=10, help="timed repeats per bench row")
    s.add_argument("--out", default="runs/selftest", metavar="DIR", help="directory for selftest.json and selftest.md")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def train_config(args, device=None):
    """The :class:`~backprop_gpu.app.train.TrainConfig` of parsed ``train`` arguments; ``device`` overrides ``--device``."""
    from .train import TrainConfig

    return TrainConfig(dataset=args.dataset, model=args.model, hidden=args.hidden, optimizer=args.optimizer,
                       lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                       device=args.device if device is None else device, seed=args.seed, out=args.out,
                       resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress,
                       momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                       scheduler=args.scheduler, stop_after=args.stop_after, name=args.name,
                       runs_dir=args.runs_dir, overwrite=args.overwrite)


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
                              after_backward=dist.after_backward,
                              command=["backprop-gpu", *map(str, sys.argv[1:] if argv is None else argv)])
            # ranks started with other settings (or resuming another epoch) would silently diverge or hang:
            # compared across ranks, with the model, before training starts
            same = ("dataset", "model", "hidden", "optimizer", "momentum", "nesterov", "weight_decay", "scheduler",
                    "batch_size", "epochs", "stop_after", "seed")
            # given the optimizer, gradients are averaged in buckets while backward runs
            dist.prepare(trainer.model, trainer.opt, config={**{k: getattr(trainer.cfg, k) for k in same},
                                                "lr": trainer.cfg.resolved_lr(), "resumed after epoch": trainer.epoch})
            # weights each rank's gradient by its share of an unevenly split last batch
            trainer.loader = dist.wrap_loader(trainer.loader)
            cfg = trainer.cfg  # a resumed run's hyperparameters are the checkpoint's
            from .models import summary

            # the header: what was asked for and what is used, the model, then the run's settings
            log(f"device: asked for {args.device!r}, using {trainer.backend.device} ({trainer.backend.name})")
            log(f"model: {cfg.model}, {summary(trainer.model)}")
            batch = (f"batch {cfg.batch_size}" if cfg.batch_size is not None
                     else f"batch {len(trainer.train_set)} (full batch)")
            log(f"training {cfg.model} on {cfg.dataset} ({len(trainer.train_set)} train / {len(trainer.test_set)} "
                f"test) with {cfg.optimizer} lr {cfg.resolved_lr():g}"
                + (f" ({cfg.scheduler} schedule)" if cfg.scheduler != "none" else "")
                + f", {batch}, on "
                f"{trainer.backend.device} ({trainer.backend.name})"
                + (f", {dist.world_size} ranks" if dist.world_size > 1 else ""))
            if trainer.fit()["interrupted"]:  # by Ctrl-C, after saving a checkpoint and saying how to resume
                return INTERRUPTED
        elif args.command == "compare-optimizers":
            from .demos import compare_optimizers

            compare_optimizers(out=args.out, epochs=args.epochs, dataset=args.dataset, hidden=args.hidden,
                               device=args.device, seed=args.seed)
        elif args.command == "optimizer-paths":
            from .demos import optimizer_paths

            optimizer_paths(out=args.out, steps=args.steps)
        elif args.command == "selftest":
            from .selftest import main as selftest

            if not 0 < args.scale <= 1000:
                raise ValueError(f"--scale must be in (0, 1000], got {args.scale}")
            backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
            return selftest(bench=args.bench, out=args.out, backends=backends, scale=args.scale,
                            repeats=args.repeats, progress=not args.no_progress)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing more was saved
        from ..distributed import fail_all_ranks

        return fail_all_ranks("backprop-gpu: interrupted (nothing saved since the last checkpoint)", INTERRUPTED)
    except (ValueError, OSError, RuntimeError) as e:  # OSError: a full disk, a read-only directory, ...
        from ..distributed import fail_all_ranks

        # under mpiexec this ends every rank now (the others would wait for this one until the watchdog fires)
        return fail_all_ranks(f"backprop-gpu: error: {e}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
