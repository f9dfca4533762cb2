"""Learning-rate schedulers with PyTorch's semantics and ``state_dict``.

Call ``scheduler.step()`` once per epoch (or per step for warm-up), after
``optimizer.step()``. Closed forms are used, so a resumed schedule matches an
uninterrupted one exactly.
"""
from __future__ import annotations

import bisect
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
        """The lr of a group whose initial lr is ``base_lr`` at ``epoch``; subclasses define it."""
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
"""Another name for :class:`LinearLR`: a warm-up from ``start_factor`` to ``end_factor`` times the lr."""


class MultiStepLR(LRScheduler):
    """lr = base * gamma ** (number of milestones <= epoch); a milestone listed twice counts twice."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        ms = sorted(int(m) for m in milestones)
        if any(m < 0 for m in ms):
            raise ValueError(f"MultiStepLR milestones must be >= 0, got {list(milestones)}")
        self.milestones, self.gamma = ms, float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def state_dict(self) -> dict:  # the milestones are the constructor's, not state
        return {k: v for k, v in super().state_dict().items() if k != "milestones"}


class LambdaLR(LRScheduler):
    """lr = base * lr_lambda(epoch), one function for every group or a list of one per group.
    As in PyTorch, ``state_dict`` leaves the functions out (they are code, not state)."""

    def __init__(self, optimizer, lr_lambda, last_epoch: int = -1):
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(fns) != n:
            raise ValueError(f"LambdaLR expected {n} lr_lambdas (one per param group), got {len(fns)}")
        if not all(callable(f) for f in fns):
            raise TypeError("LambdaLR lr_lambda must be a function or a list of functions")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        for g, base, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            g["lr"] = base * fn(self.last_epoch)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}


class OneCycleLR(LRScheduler):
    """The 1cycle policy (PyTorch's ``OneCycleLR``, per batch): lr rises from ``max_lr / div_factor``
    to ``max_lr`` over ``pct_start`` of the steps, then anneals to ``initial / final_div_factor``;
    with ``cycle_momentum`` the momentum (or Adam's beta1) moves the opposite way."""

    _limits = {**LRScheduler._limits, "total_steps": (lambda v: v >= 1, "must be >= 1")}

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
            if epochs < 1 or steps_per_epoch < 1:
                raise ValueError(f"OneCycleLR epochs and steps_per_epoch must be >= 1, got {epochs}, {steps_per_epoch}")
            total_steps = epochs * steps_per_epoch
        if total_steps < 1:
            raise ValueError(f"OneCycleLR total_steps must be >= 1, got {total_steps}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR pct_start must lie in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        n = len(optimizer.param_groups)
        per_group = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
        self.total_steps, self.anneal_strategy = int(total_steps), anneal_strategy
        end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self.phases = [(end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum",
                            "max_momentum"),
                           (self.total_steps - 1.0, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self.phases = [(end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (self.total_steps - 1.0, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self.cycle_momentum = bool(cycle_momentum)
        for g, mx, bm, xm in zip(optimizer.param_groups, per_group(max_lr), per_group(base_momentum),
                                 per_group(max_momentum)):
            if last_epoch == -1:
                g["initial_lr"] = mx / div_factor
                g["max_lr"], g["min_lr"] = mx, g["initial_lr"] / final_div_factor
            if self.cycle_momentum:
                if "momentum" not in g and "betas" not in g:
                    raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
                if last_epoch == -1:
                    g["max_momentum"], g["base_momentum"] = xm, bm
                    self._set_momentum(g, xm)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _set_momentum(g, m):
        if "betas" in g:
            g["betas"] = (m, *g["betas"][1:])
        else:
            g["momentum"] = m

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, g, step):
        """(lr, momentum) of group ``g`` at ``step``, as PyTorch's get_lr computes them."""
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {step} times, more than total_steps={self.total_steps}")
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                lr = self._anneal(g[lr0], g[lr1], pct)
                mom = self._anneal(g[m0], g[m1], pct) if self.cycle_momentum else None
                return lr, mom
            start = end

    def state_dict(self) -> dict:  # the phases follow from the constructor's arguments
        return {k: v for k, v in super().state_dict().items() if k != "phases"}

    def step(self) -> None:
        self.last_epoch += 1
        for g in self.optimizer.param_groups:
            lr, mom = self._at(g, self.last_epoch)
            g["lr"] = lr
            if mom is not None:
                self._set_momentum(g, mom)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


class SequentialLR:
    """Run ``schedulers`` one after another, switching at each of ``milestones`` (PyTorch's rules:
    the next scheduler starts from its own epoch 0 at its milestone)."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1):
        schedulers = list(schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects {len(schedulers) - 1} milestone(s) for {len(schedulers)} "
                             f"schedulers, got {len(milestones)}")
        for i, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(s).__name__}) belongs to another optimizer")
        self.optimizer, self._schedulers, self._milestones = optimizer, schedulers, list(milestones)
        self.last_epoch = last_epoch + 1
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        for s in schedulers:  # undo the step each took when it was built
            s.last_epoch -= 1
        schedulers[0].step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self) -> None:
        """Advance one epoch: step the scheduler whose turn it is (restarted at its milestone)."""
        self.last_epoch += 1
        i = bisect.bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            s.last_epoch = -1  # its epoch 0
        s.step()
        self._last_lr = s.get_last_lr()

    get_last_lr = LRScheduler.get_last_lr

    def state_dict(self) -> dict:
        """The epoch, milestones, last lrs and every sub-scheduler's state, as plain Python values."""
        return {"last_epoch": self.last_epoch, "_milestones": list(self._milestones),
                "_last_lr": list(self._last_lr), "_schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state: dict) -> None:
        """All or nothing: every sub-scheduler's state is checked before any is set."""
        if not isinstance(state, dict) or set(state) != set(self.state_dict()):
            raise ValueError(f"SequentialLR state_dict must have the entries {sorted(self.state_dict())}")
        subs = state["_schedulers"]
        if not isinstance(subs, list) or len(subs) != len(self._schedulers):
            raise ValueError(f"SequentialLR state_dict entry '_schedulers': expected {len(self._schedulers)} states")
        checked = [s.check_state_dict(st) for s, st in zip(self._schedulers, subs)]
        if state["_milestones"] != self._milestones:
            raise ValueError(f"SequentialLR state_dict entry '_milestones': {state['_milestones']!r}, this "
                             f"scheduler has {self._milestones}")
        for s, values in zip(self._schedulers, checked):
            s.__dict__.update(values)
        self.last_epoch, self._last_lr = int(state["last_epoch"]), list(state["_last_lr"])


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
