"""Learning-rate schedulers with PyTorch's semantics and ``state_dict``.

Call ``scheduler.step()`` once per epoch (or per step for warm-up), after
``optimizer.step()``. Closed forms are used, so a resumed schedule matches an
uninterrupted one exactly.
"""
from __future__ import annotations

import math


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _refuse(sched, key, reason):
    err = ValueError(f"{type(sched).__name__} state_dict entry {key!r}: {reason}")
    err.entry, err.reason = (key,), reason  # for callers (checkpoint.restore) that name entries their way
    return err


def _checked_state(sched, state) -> dict:
    """The values ``load_state_dict`` would set from ``state``, or ValueError naming the first bad entry.

    ``state`` must have exactly the entries of ``sched.state_dict()``, each of the same kind (an
    integer where an integer is kept; a finite number; a string; a list of one learning rate per
    param group), within the limits the constructor enforces (``_limits``). Changes nothing."""
    if not isinstance(state, dict):
        raise TypeError(f"{type(sched).__name__}.load_state_dict expects a dict, got {type(state).__name__}")
    mine = sched.state_dict()
    for key in state:
        if key not in mine:
            raise _refuse(sched, key, f"not part of {type(sched).__name__}'s state (it has {', '.join(mine)})")
    out = {}
    for key, like in mine.items():
        if key not in state:
            raise _refuse(sched, key, "missing")
        v = state[key]
        if isinstance(like, list):
            if not isinstance(v, (list, tuple)) or len(v) != len(like) or not all(map(_real, v)):
                raise _refuse(sched, key, f"{v!r} is not a list of {len(like)} number(s), one per param group")
            if not all(math.isfinite(x) and x >= 0 for x in v):
                raise _refuse(sched, key, f"{v!r}: learning rates must be finite and >= 0")
            v = list(v)
        elif isinstance(like, str):
            if not isinstance(v, str):
                raise _refuse(sched, key, f"{v!r} is not a string")
        elif isinstance(like, int) and not isinstance(like, bool):
            if not isinstance(v, int) or isinstance(v, bool):
                raise _refuse(sched, key, f"{v!r} is not an integer")
        elif _real(like):
            if not _real(v) or math.isnan(v) or (math.isinf(v) and key not in sched._may_be_infinite):
                raise _refuse(sched, key, f"{v!r} is not a finite number")
            v = float(v)
        elif type(v) is not type(like):
            raise _refuse(sched, key, f"{v!r} is not a {type(like).__name__}")
        out[key] = v
    for key, (ok, limit) in sched._limits.items():
        if not ok(out[key]):
            raise _refuse(sched, key, f"{out[key]!r} is out of range ({limit})")
    return out


class LRScheduler:
    """Base class: subclasses define :meth:`lr_at`, the lr of a group at ``last_epoch``."""

    #: saved entry -> (check, what it means): the constructor's limits, applied to a loaded state too
    _limits = {"last_epoch": (lambda v: v >= 0, "must be >= 0 once the scheduler has been built")}
    #: float entries that may legitimately be infinite
    _may_be_infinite = ()

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            if last_epoch == -1:
                g.setdefault("initial_lr", g["lr"])
            elif "initial_lr" not in g:
                raise KeyError("param 'initial_lr' is not specified in param_groups when resuming a scheduler")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr: float, epoch: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set each group's lr."""
        self.last_epoch += 1
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(base, self.last_epoch)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The lrs set by the last :meth:`step`."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer, as plain Python values."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def check_state_dict(self, state: dict) -> dict:
        """The values :meth:`load_state_dict` would set; ValueError naming the first bad entry
        (missing, unknown, of the wrong kind, or outside the constructor's limits). Changes nothing."""
        return _checked_state(self, state)

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict`, all or nothing: everything is checked (:meth:`check_state_dict`)
        before anything is set."""
        self.__dict__.update(self.check_state_dict(state))


class StepLR(LRScheduler):
    """lr = base * gamma ** (epoch // step_size)."""

    _limits = {**LRScheduler._limits, "step_size": (lambda v: v >= 1, "must be >= 1")}

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if step_size < 1:
            raise ValueError(f"StepLR step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (PyTorch's closed form)."""

    _limits = {**LRScheduler._limits, "T_max": (lambda v: v >= 1, "must be >= 1")}

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    _limits = {**LRScheduler._limits, "start_factor": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
               "end_factor": (lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
               "total_iters": (lambda v: v >= 0, "must be >= 0")}

    def __init__(self, optimizer, start_factor: float = 1 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR factors must lie in (0, 1] and [0, 1], got {start_factor}, {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = float(start_factor), float(end_factor), int(total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        t = min(epoch, self.total_iters) / self.total_iters if self.total_iters else 1.0
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * t)


LinearWarmup = LinearLR


class ReduceLROnPlateau:
    """Multiply lr by ``factor`` when a metric stops improving for ``patience`` epochs (PyTorch's rules)."""

    _limits = {"factor": (lambda v: v < 1.0, "must be < 1.0"), "mode": (lambda v: v in ("min", "max"), "min or max"),
               "threshold_mode": (lambda v: v in ("rel", "abs"), "rel or abs"),
               **{k: (lambda v: v >= 0, "must be >= 0") for k in ("patience", "cooldown", "eps", "num_bad_epochs",
                                                                   "cooldown_counter", "last_epoch")}}
    _may_be_infinite = ("best",)  # inf (mode min) or -inf (max) until the first step

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr=0.0,
                 eps: float = 1e-8):
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be < 1.0, got {factor}")
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"bad mode {mode!r} or threshold_mode {threshold_mode!r}")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [float(min_lr)] * n
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _better(self, a, best):
        if self.mode == "min":
            return a < (best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metric) -> None:
        """Record this epoch's ``metric`` and reduce the lr if it has plateaued."""
        current = float(metric)
        self.last_epoch += 1
        if self._better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(g["lr"] * self.factor, lo)
                if g["lr"] - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    get_last_lr = LRScheduler.get_last_lr
    state_dict = LRScheduler.state_dict
    check_state_dict = LRScheduler.check_state_dict
    load_state_dict = LRScheduler.load_state_dict
