"""Each optimizer's per-element update rule, stated once.

A rule's ``math(flags, sqrt, maximum)`` returns one plain scalar function
``fn(p, g, *all_states, *hypers) -> (p, *all_states)`` in which the variant
flags (nesterov, amsgrad, centered, ...) are closure constants, so every
backend compiles a branch-free kernel per variant. A variant passes zero for
the states it does not keep (``state_names(flags)`` are the ones it keeps) and
ignores them on return:

* NumPy calls ``fn`` on whole arrays (the reference);
* Numba compiles it for a ``prange`` loop (CPU) and as a CUDA device function;
* ``cuda_source`` translates its source (via :mod:`ast`) into one CUDA C
  kernel per variant for CuPy, so the CUDA C never restates a rule.

Scalars are computed on the host in float64 and passed per launch: those that
change per step (bias corrections, Adagrad's decayed lr, the first momentum
step) come from an integer step count, so a GPU step needs no host
synchronisation, and complements such as ``1 - beta2`` are formed in float64
before the cast to the parameters' dtype, as PyTorch does (in float32,
``1 - 0.999`` would be off by 5e-5 relative). The arithmetic
follows the ``_single_tensor_*`` functions of ``torch.optim`` operation for
operation. Two rounding-level differences remain: PyTorch's ``lerp`` switches
to ``end - (end - self) * (1 - w)`` when its weight is >= 0.5 (Adam with
``beta1 <= 0.5``, centered RMSprop with ``alpha <= 0.5``), and its vectorised
CPU kernels may contract into FMAs; the math is the same.

A rule is described by: ``name``; ``flags(group)``, the variant as a tuple of
booleans; ``state_names(flags)``, the states that variant keeps, and
``all_states``, the states its function takes; ``hyper_names``, the per-launch
scalars in order, produced by ``hypers(group, step, flags)``; and
``math(flags, sqrt, maximum)``, the scalar function.

The per-step scalars are themselves stated once, as a second scalar function
``hyper_math(flags)``: ``fn(lr, step, *consts) -> hypers`` over the learning
rate, the (1-based) step count and the group's other constants
(``const_names``, from ``consts(group)``). The host evaluates it in float64
(:meth:`Rule.hypers`); in the device-scalar form of the kernels (capturable
optimizers, and steps driven by ``GradScaler``) every target evaluates the
same function at the top of the kernel, in float64, from ``lr`` and ``step``
read out of 1-element device arrays, so the two forms agree bit for bit and no
host value enters a step. That form also multiplies each gradient by the
device ``inv_scale`` and skips the whole launch when the device ``found_inf``
is set (``codegen.DEVICE_SCALARS``).
"""
from __future__ import annotations

import math


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _common(group) -> None:
    lr = group["lr"]
    _check(isinstance(lr, (int, float)) and lr >= 0, f"Invalid learning rate: {lr} (must be >= 0)")
    _check(group.get("weight_decay", 0) >= 0, f"Invalid weight_decay value: {group.get('weight_decay')} (must be >= 0)")
    if "eps" in group:
        _check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']} (must be >= 0)")


class Rule:
    """One optimizer's update: validation, variant flags, state, per-step scalars and the math."""

    name = ""

    def validate(self, group) -> None:
        _common(group)

    def flags(self, group) -> tuple:
        return ()

    #: every state the rule's function takes, in argument order
    all_states: tuple = ()
    #: the per-launch scalars the function takes after its states, in order (see :meth:`hypers`)
    hyper_names: tuple = ()
    #: the group constants ``hyper_math``'s function takes after ``lr`` and ``step``, in order
    const_names: tuple = ()

    def state_init(self, flags, group) -> list[tuple[str, float]]:
        """(state name, initial fill) for each flat state buffer this variant keeps."""
        return []

    def state_names(self, flags) -> tuple:
        return tuple(n for n, _ in self.state_init(flags, {"initial_accumulator_value": 0.0}))

    def consts(self, group) -> tuple:
        """The group's values of ``const_names`` (Python numbers): kernel arguments in the device form."""
        return tuple(group[n] for n in self.const_names)

    def hyper_math(self, flags):
        """``fn(lr, step, *consts) -> hypers`` (``hyper_names`` order): plain arithmetic (``+ - * / **``,
        conditional expressions), evaluated on the host in float64 and translated for the kernels'
        device form."""
        raise NotImplementedError

    def hypers(self, group, step: int, flags) -> tuple:
        """The scalars named by ``hyper_names`` for step ``step`` (1-based), as Python numbers.

        Cast them to the parameters' dtype for the launch; being computed here
        from an integer step, they never need a read back from the device.
        """
        return tuple(float(h) for h in self.hyper_math(flags)(group["lr"], step, *self.consts(group)))

    def math(self, flags, sqrt, maximum):
        """``fn(p, g, *all_states, *hypers) -> (p, *all_states)`` for variant ``flags``.

        ``sqrt`` and ``maximum`` are the target's (``math.sqrt``/``max`` for
        scalars, ``np.sqrt``/``np.maximum`` for arrays); the flags are closure
        constants, so compilers drop the branches they switch off.
        """
        raise NotImplementedError


class SGD(Rule):
    """``torch.optim.SGD`` (``_single_tensor_sgd``)::

        g = -g if maximize;  g = g + wd * p
        buf = g if first step else buf * momentum + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    Torch's first momentum step copies the gradient into the buffer rather than
    damping it; the host passes ``first`` = 1.0 on that step.
    Flags: (momentum != 0, nesterov, weight_decay != 0, maximize).
    """

    name = "sgd"
    all_states = ("momentum_buffer",)
    hyper_names = ("lr", "wd", "momentum", "one_minus_dampening", "first")

    def validate(self, group):
        _common(group)
        _check(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']} (must be >= 0)")
        _check(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
               "Nesterov momentum requires a momentum and zero dampening")

    def flags(self, group):
        return (group["momentum"] != 0, bool(group["nesterov"]), group["weight_decay"] != 0, bool(group["maximize"]))

    def state_init(self, flags, group):
        return [("momentum_buffer", 0.0)] if flags[0] else []

    const_names = ("weight_decay", "momentum", "dampening")

    def hyper_math(self, flags):
        def sgd_hypers(lr, step, wd, momentum, dampening):
            first = 1.0 if step == 1 else 0.0  # torch: buf is None on the first step, so buf = g
            return lr, wd, momentum, 1 - dampening, first
        return sgd_hypers

    def math(self, flags, sqrt, maximum):
        use_momentum, nesterov, decay, maximize = flags

        def sgd(p, g, buf, lr, wd, momentum, one_minus_dampening, first):
            d = -g if maximize else g
            if decay:
                d = d + wd * p
            if use_momentum:
                if first != 0:
                    buf = d
                else:
                    buf = buf * momentum + one_minus_dampening * d
                if nesterov:
                    d = d + momentum * buf
                else:
                    d = buf
            return p - lr * d, buf
        return sgd


class Adagrad(Rule):
    """``torch.optim.Adagrad`` (``_single_tensor_adagrad``)::

        g = -g if maximize;  g = g + wd * p
        clr = lr / (1 + (step - 1) * lr_decay)          # hyper_math
        sum = sum + g * g
        p = p - clr * (g / (sqrt(sum) + eps))

    ``initial_accumulator_value`` is the fill of ``sum`` (``state_init``).
    Flags: (weight_decay != 0, maximize).
    """

    name = "adagrad"
    all_states = ("sum",)
    hyper_names = ("clr", "wd", "eps")

    def validate(self, group):
        _common(group)
        _check(group["lr_decay"] >= 0, f"Invalid lr_decay value: {group['lr_decay']} (must be >= 0)")
        _check(group["initial_accumulator_value"] >= 0,
               f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']} (must be >= 0)")

    def flags(self, group):
        return (group["weight_decay"] != 0, bool(group["maximize"]))

    def state_init(self, flags, group):
        return [("sum", float(group.get("initial_accumulator_value", 0.0)))]

    const_names = ("lr_decay", "weight_decay", "eps")

    def hyper_math(self, flags):
        def adagrad_hypers(lr, step, lr_decay, wd, eps):
            return lr / (1 + (step - 1) * lr_decay), wd, eps
        return adagrad_hypers

    def math(self, flags, sqrt, maximum):
        decay, maximize = flags

        def adagrad(p, g, s, clr, wd, eps):
            d = -g if maximize else g
            if decay:
                d = d + wd * p
            s = s + d * d
            return p - clr * (d / (sqrt(s) + eps)), s
        return adagrad


class Adadelta(Rule):
    """``torch.optim.Adadelta`` (``_single_tensor_adadelta``)::

        g = -g if maximize;  g = g + wd * p
        square_avg = square_avg * rho + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = acc_delta * rho + (1 - rho) * delta * delta
        p = p - lr * delta

    Flags: (weight_decay != 0, maximize).
    """

    name = "adadelta"
    all_states = ("square_avg", "acc_delta")
    hyper_names = ("lr", "rho", "one_minus_rho", "eps", "wd")

    def validate(self, group):
        _common(group)
        _check(0 <= group["rho"] <= 1, f"Invalid rho value: {group['rho']} (must be in [0, 1])")

    def flags(self, group):
        return (group["weight_decay"] != 0, bool(group["maximize"]))

    def state_init(self, flags, group):
        return [("square_avg", 0.0), ("acc_delta", 0.0)]

    const_names = ("rho", "eps", "weight_decay")

    def hyper_math(self, flags):
        def adadelta_hypers(lr, step, rho, eps, wd):
            return lr, rho, 1 - rho, eps, wd
        return adadelta_hypers

    def math(self, flags, sqrt, maximum):
        decay, maximize = flags

        def adadelta(p, g, sq, acc, lr, rho, one_minus_rho, eps, wd):
            d = -g if maximize else g
            if decay:
                d = d + wd * p
            sq = sq * rho + one_minus_rho * d * d
            std = sqrt(sq + eps)
            delta = sqrt(acc + eps) / std * d
            acc = acc * rho + one_minus_rho * delta * delta
            return p - lr * delta, sq, acc
        return adadelta


class RMSprop(Rule):
    """``torch.optim.RMSprop`` (``_single_tensor_rmsprop``)::

        g = -g if maximize;  g = g + wd * p
        square_avg = square_avg * alpha + (1 - alpha) * g * g
        if centered: grad_avg = grad_avg + (1 - alpha) * (g - grad_avg)     # lerp
                     avg = sqrt(square_avg - grad_avg * grad_avg) + eps
        else:        avg = sqrt(square_avg) + eps
        if momentum > 0: buf = buf * momentum + g / avg;  p = p - lr * buf
        else:            p = p - lr * (g / avg)

    Flags: (momentum > 0, centered, weight_decay != 0, maximize).
    """

    name = "rmsprop"
    all_states = ("square_avg", "momentum_buffer", "grad_avg")
    hyper_names = ("lr", "alpha", "one_minus_alpha", "eps", "wd", "momentum")

    def validate(self, group):
        _common(group)
        _check(group["alpha"] >= 0, f"Invalid alpha value: {group['alpha']} (must be >= 0)")
        _check(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']} (must be >= 0)")

    def flags(self, group):
        return (group["momentum"] > 0, bool(group["centered"]), group["weight_decay"] != 0, bool(group["maximize"]))

    def state_init(self, flags, group):
        s = [("square_avg", 0.0)]
        if flags[0]:
            s.append(("momentum_buffer", 0.0))
        if flags[1]:
            s.append(("grad_avg", 0.0))
        return s

    const_names = ("alpha", "eps", "weight_decay", "momentum")

    def hyper_math(self, flags):
        def rmsprop_hypers(lr, step, alpha, eps, wd, momentum):
            return lr, alpha, 1 - alpha, eps, wd, momentum
        return rmsprop_hypers

    def math(self, flags, sqrt, maximum):
        use_momentum, centered, decay, maximize = flags

        def rmsprop(p, g, sq, buf, ga, lr, alpha, one_minus_alpha, eps, wd, momentum):
            d = -g if maximize else g
            if decay:
                d = d + wd * p
            sq = sq * alpha + one_minus_alpha * d * d
            if centered:
                ga = ga + one_minus_alpha * (d - ga)
                avg = sqrt(sq - ga * ga) + eps
            else:
                avg = sqrt(sq) + eps
            if use_momentum:
                buf = buf * momentum + d / avg
                p = p - lr * buf
            else:
                p = p - lr * (d / avg)
            return p, sq, buf, ga
        return rmsprop


class Adam(Rule):
    """``torch.optim.Adam`` (``_single_tensor_adam``), L2 weight decay added to the gradient::

        g = -g if maximize;  g = g + wd * p           # AdamW instead: p = p * (1 - lr * wd)
        m = m + (1 - beta1) * (g - m)                  # exp_avg.lerp_(g, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        step_size = lr / (1 - beta1**step); bc2_sqrt = (1 - beta2**step) ** 0.5   # hyper_math
        vmax = maximum(vmax, v) if amsgrad
        p = p - step_size * (m / (sqrt(vmax or v) / bc2_sqrt + eps))

    Flags: (amsgrad, weight_decay != 0, maximize).
    """

    name = "adam"
    all_states = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    hyper_names = ("one_minus_beta1", "beta2", "one_minus_beta2", "eps", "wd", "decay_factor", "step_size",
                   "bc2_sqrt")
    decoupled = False

    def validate(self, group):
        _common(group)
        b1, b2 = group["betas"]
        _check(0 <= b1 < 1, f"Invalid beta parameter at index 0: {b1} (must be in [0, 1))")
        _check(0 <= b2 < 1, f"Invalid beta parameter at index 1: {b2} (must be in [0, 1))")

    def flags(self, group):
        return (bool(group["amsgrad"]), group["weight_decay"] != 0, bool(group["maximize"]))

    def state_init(self, flags, group):
        s = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
        if flags[0]:
            s.append(("max_exp_avg_sq", 0.0))
        return s

    const_names = ("beta1", "beta2", "eps", "weight_decay")

    def consts(self, group):  # betas is one entry of the group: a pair
        b1, b2 = group["betas"]
        return (b1, b2, group["eps"], group["weight_decay"])

    def hyper_math(self, flags):
        def adam_hypers(lr, step, b1, b2, eps, wd):
            bc1 = 1 - b1 ** step
            bc2 = 1 - b2 ** step
            return 1 - b1, b2, 1 - b2, eps, wd, 1 - lr * wd, lr / bc1, bc2 ** 0.5
        return adam_hypers

    def math(self, flags, sqrt, maximum):
        amsgrad, decay, maximize = flags
        decoupled = self.decoupled

        def adam(p, g, m, v, vmax, one_minus_beta1, beta2, one_minus_beta2, eps, wd, decay_factor, step_size,
                 bc2_sqrt):
            d = -g if maximize else g
            if decay:
                if decoupled:
                    p = p * decay_factor
                else:
                    d = d + wd * p
            m = m + one_minus_beta1 * (d - m)
            v = v * beta2 + one_minus_beta2 * d * d
            if amsgrad:
                vmax = maximum(vmax, v)
                denom = sqrt(vmax) / bc2_sqrt + eps
            else:
                denom = sqrt(v) / bc2_sqrt + eps
            return p - step_size * (m / denom), m, v, vmax
        return adam


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay, ``p = p * (1 - lr * wd)`` before the step."""

    name = "adamw"
    decoupled = True


RULES = {r.name: r for r in (SGD(), Adagrad(), Adadelta(), RMSprop(), Adam(), AdamW())}


def get(name: str) -> Rule:
    """The rule called ``name``."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown optimizer rule {name!r}; known: {', '.join(RULES)}") from None


def scalar_fn(name: str, flags: tuple, sqrt=math.sqrt, maximum=max):
    """The rule's update ``fn(p, g, *all_states, *hypers) -> (p, *all_states)`` for one variant,
    with the target's ``sqrt`` and ``maximum`` (scalar or array functions)."""
    return get(name).math(flags, sqrt, maximum)


def nonfinite(x):
    """1.0 where ``x`` is inf or NaN, else 0.0 (``x - x`` is NaN exactly then): the per-element test of
    the found-inf check launch (``GradScaler``), compiled by the CPU and CUDA targets and written as
    the same expression in ``cuda_source``."""
    return 0.0 if x - x == 0 else 1.0


def prepare_hypers(name: str, group: dict, step: int) -> tuple:
    """The per-launch scalars (Python floats, ``hyper_names`` order) of rule ``name`` at ``step``."""
    rule = get(name)
    return rule.hypers(group, step, rule.flags(group))


def state_slots(name: str, flags: tuple) -> list:
    """For each of the rule's ``all_states``: its index among the variant's kept states, or None."""
    kept = get(name).state_names(flags)
    return [kept.index(s) if s in kept else None for s in get(name).all_states]
