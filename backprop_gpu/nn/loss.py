"""Loss modules with ``torch.nn``'s constructors, thin Modules over :mod:`backprop_gpu.nn.functional`.

Each takes torch's constructor arguments. An argument whose functional form here has no
counterpart (the legacy ``size_average``/``reduce``) raises NotImplementedError naming it
when it is set, rather than being silently ignored. ``weight``
and ``pos_weight`` are registered as buffers (in ``state_dict`` when set), as torch's are.
"""
from __future__ import annotations

from ..tape.tensor import Tensor
from . import functional as F
from .module import Module


def _legacy(cls, size_average, reduce):
    for name, v in (("size_average", size_average), ("reduce", reduce)):
        if v is not None:
            raise NotImplementedError(f"{cls}: the deprecated argument {name}={v!r} is not supported; "
                                      f"use reduction='mean'|'sum'|'none'")


def _as_tensor(cls, name, value):
    if value is None or isinstance(value, Tensor):
        return value
    raise TypeError(f"{cls}: {name} must be a Tensor or None, got {type(value).__name__}")


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        _legacy(type(self).__name__, size_average, reduce)
        F._check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _as_tensor(type(self).__name__, "weight", weight))


class L1Loss(_Loss):
    """Mean absolute error, as ``torch.nn.L1Loss`` (over :func:`~backprop_gpu.nn.functional.l1_loss`)."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error, as ``torch.nn.MSELoss`` (over :func:`~backprop_gpu.nn.functional.mse_loss`)."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Smooth L1 loss with threshold ``beta``, as ``torch.nn.SmoothL1Loss``."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
        super().__init__(size_average, reduce, reduction)
        if beta < 0:
            raise ValueError(f"SmoothL1Loss beta must be non-negative, got {beta}")
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Huber loss with threshold ``delta``, as ``torch.nn.HuberLoss``."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction=reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss delta must be positive, got {delta}")
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities, as ``torch.nn.NLLLoss``; ``weight`` (C,) weights
    the classes (``'mean'`` then divides by the summed weights of the counted rows)."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, reduction=self.reduction, ignore_index=self.ignore_index)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits against class indices, as ``torch.nn.CrossEntropyLoss`` (one fused op
    without class weights); ``weight`` (C,) weights the classes as torch."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, reduction=self.reduction, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities, as ``torch.nn.BCELoss``; ``weight`` rescales each element."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy of logits (stable, one op), as ``torch.nn.BCEWithLogitsLoss``; ``weight``
    rescales each element and ``pos_weight`` the positive term."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__(weight, size_average, reduce, reduction)
        self.register_buffer("pos_weight", _as_tensor("BCEWithLogitsLoss", "pos_weight", pos_weight))

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


__all__ = ["L1Loss", "MSELoss", "SmoothL1Loss", "HuberLoss", "NLLLoss", "CrossEntropyLoss", "BCELoss",
           "BCEWithLogitsLoss"]


class KLDivLoss(Module):
    """The KL divergence of log-probabilities ``input`` from ``target``, as ``torch.nn.KLDivLoss``
    (over :func:`~backprop_gpu.nn.functional.kl_div`); ``reduction`` also takes ``'batchmean'``,
    the sum over the batch divided by the batch size, which is the KL divergence proper."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False):
        super().__init__()
        _legacy("KLDivLoss", size_average, reduce)
        if reduction not in F._KL_REDUCTIONS:
            raise ValueError(f"KLDivLoss: reduction must be one of {F._KL_REDUCTIONS}, got {reduction!r}")
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


__all__ += ["KLDivLoss"]
