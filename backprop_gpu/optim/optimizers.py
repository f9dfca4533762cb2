"""The optimizers, with ``torch.optim``'s constructor arguments and defaults.

The update math of each lives in :mod:`backprop_gpu.optim.rules`; these classes
hold hyperparameters. ``foreach`` and ``fused`` are accepted for PyTorch
compatibility and ignored: every step here is already one fused launch per
flat buffer. ``capturable=True`` (every optimizer, unlike torch) keeps the
learning rate and step counts on the device, where the fused kernel reads them:
no host value enters a step (see :mod:`backprop_gpu.optim.optimizer`).
"""
from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay.

    Batch, stochastic and mini-batch gradient descent are this same update; they
    differ only in the batch size the data loader yields.
    """

    rule_name = "sgd"

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, capturable=capturable))


class Adagrad(Optimizer):
    """Adagrad: per-element steps scaled by the root of the summed squared gradients."""

    rule_name = "adagrad"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 *, maximize=False, foreach=None, fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, capturable=capturable))


class Adadelta(Optimizer):
    """Adadelta: steps scaled by running RMS of past updates over running RMS of gradients."""

    rule_name = "adadelta"

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False, foreach=None,
                 fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable))


class RMSprop(Optimizer):
    """RMSprop with optional centering (variance instead of second moment) and momentum."""

    rule_name = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, capturable=capturable))


class Adam(Optimizer):
    """Adam with bias correction, optional AMSGrad and L2 weight decay (added to the gradient)."""

    rule_name = "adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, capturable=capturable))


class AdamW(Optimizer):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before each Adam step."""

    rule_name = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None, capturable=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, capturable=capturable))


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW)}
