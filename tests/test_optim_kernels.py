"""Variant table and group builder shared with ``test_optim.py`` (its ``from test_optim_kernels import``).

The kernel tests that lived here moved to ``test_fused_kernels.py``, which
covers every flag combination; this module keeps only the data that
``test_optim.py`` imports and collects no tests.
"""

# Group configurations that between them switch every variant flag on and off.
VARIANTS = {
    "sgd": [dict(momentum=0.0, nesterov=False, weight_decay=0.0, maximize=False),
            dict(momentum=0.9, nesterov=False, dampening=0.1, weight_decay=0.01, maximize=False),
            dict(momentum=0.9, nesterov=True, weight_decay=0.0, maximize=True)],
    "adagrad": [dict(), dict(weight_decay=0.1, lr_decay=0.01, initial_accumulator_value=0.1, maximize=True)],
    "adadelta": [dict(), dict(weight_decay=0.1, rho=0.8, maximize=True)],
    "rmsprop": [dict(), dict(momentum=0.9), dict(centered=True, weight_decay=0.1),
                dict(momentum=0.5, centered=True, maximize=True)],
    "adam": [dict(), dict(amsgrad=True, weight_decay=0.1), dict(maximize=True)],
    "adamw": [dict(), dict(amsgrad=True, weight_decay=0.0), dict(maximize=True)],
}


def group_for(name, i, lr=0.01):
    """A full param group: the optimizer's own defaults overridden by the variant."""
    import inspect

    from backprop_gpu.optim.optimizers import OPTIMIZERS

    sig = inspect.signature(OPTIMIZERS[name].__init__)
    g = {k: p.default for k, p in sig.parameters.items()
         if k not in ("self", "params", "foreach", "fused", "capturable")}
    g.update(VARIANTS[name][i])
    g["lr"] = lr
    return g
