"""Adaptive pooling layers, as ``torch.nn.AdaptiveAvgPool1d/2d`` and ``torch.nn.AdaptiveMaxPool1d/2d``.

Thin Modules over :mod:`backprop_gpu.nn.functional` (the windows are torch's; see
:mod:`backprop_gpu.ops.adaptive_pooling`).
"""
from __future__ import annotations

from . import functional as F
from .module import Module


class _AdaptivePool(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePool):
    """Mean over adaptive windows of (N, C, L) or (C, L) input, to length ``output_size``."""

    def forward(self, x):
        return F.adaptive_avg_pool1d(x, self.output_size)


class AdaptiveAvgPool2d(_AdaptivePool):
    """Mean over adaptive windows of (N, C, H, W) or (C, H, W) input, to ``output_size`` (an int or
    an (H, W) pair; a ``None`` entry keeps the input's size)."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class _AdaptiveMaxPool(_AdaptivePool):
    def __init__(self, output_size, return_indices: bool = False):
        super().__init__(output_size)
        F._no_indices(type(self).__name__, return_indices)
        self.return_indices = return_indices


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    """Max over adaptive windows of (N, C, L) or (C, L) input; ``return_indices=True`` raises
    NotImplementedError."""

    def forward(self, x):
        return F.adaptive_max_pool1d(x, self.output_size)


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    """Max over adaptive windows of (N, C, H, W) or (C, H, W) input (the first maximum of each
    window takes the gradient); ``return_indices=True`` raises NotImplementedError."""

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size)


__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"]
