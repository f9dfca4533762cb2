"""``backprop-gpu train`` as one rank of many, wired the way the CLI should be. Used by tests/test_distributed.py.

usage: [mpiexec -n N] python cli_train.py <the arguments of `backprop-gpu train`>

Identical to the CLI's train command plus ``trainer.loader = dist.wrap_loader(trainer.loader)``,
which weights each rank's gradient by its share of the global batch.
"""
import sys

from backprop_gpu import distributed
from backprop_gpu.app import cli
from backprop_gpu.app.train import TrainConfig, Trainer

args = cli.build_parser().parse_args(["train", *sys.argv[1:]])
dist = distributed.setup_for_training(args.device)
cfg = TrainConfig(dataset=args.dataset, model=args.model, hidden=args.hidden, optimizer=args.optimizer, lr=args.lr,
                  batch_size=args.batch_size, epochs=args.epochs, device=dist.device, seed=args.seed, out=args.out,
                  resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress)
log = print if dist.is_main else (lambda *a, **k: None)
trainer = Trainer(cfg, log=log, is_main=dist.is_main, rank=dist.rank, world_size=dist.world_size,
                  after_backward=dist.after_backward)
trainer.loader = dist.wrap_loader(trainer.loader)
dist.prepare(trainer.model)
trainer.fit()
