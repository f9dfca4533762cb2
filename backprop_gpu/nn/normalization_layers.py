"""Group and instance normalisation layers, as ``torch.nn.GroupNorm`` and ``torch.nn.InstanceNorm1d/2d``.

Both run :class:`~backprop_gpu.ops.normalization.GroupNorm`, one op forward and backward
(instance normalisation is its one-channel-per-group case).
"""
from __future__ import annotations

import numbers
import warnings

from ..ops.creation import ones, zeros
from . import functional as F
from . import init
from .module import Module, Parameter


class GroupNorm(Module):
    """Normalise each sample's ``num_groups`` groups of ``num_channels / num_groups`` channels over
    their channels and positions (biased variance), then scale and shift per channel by
    ``weight`` (ones) and ``bias`` (zeros) when ``affine``. Input (N, C, ...)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None,
                 dtype=None):
        super().__init__()
        if not isinstance(num_groups, numbers.Integral) or num_groups < 1:
            raise ValueError(f"GroupNorm: num_groups must be a positive int, got {num_groups!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups, got num_channels="
                             f"{num_channels} and num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = int(num_groups), int(num_channels), eps, affine
        if affine:
            self.weight = Parameter(ones(num_channels, device=device, dtype=dtype))
            self.bias = Parameter(zeros(num_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        """Weight to 1 and bias to 0 (when affine)."""
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}) got input of shape {x.shape}; "
                             f"expected (N, {self.num_channels}, ...)")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Module):
    """Shared by InstanceNorm1d/2d: torch's ``_InstanceNorm``. ``_spatial`` is the number of
    spatial axes; input may also lack the batch axis."""

    _spatial = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None):
        super().__init__()
        if momentum is not None and (not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1):
            raise ValueError(f"{type(self).__name__} momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features, device=device, dtype=dtype))
            self.bias = Parameter(zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            # in the state_dict as torch's; instance norm never counts batches (momentum None means 0)
            self.register_buffer("num_batches_tracked", zeros((), device=device, dtype="int64"))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Running mean to 0, running variance to 1, batch count to 0 (when tracked)."""
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        """Reset the running statistics, and weight to 1 and bias to 0 (when affine)."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        name, d = type(self).__name__, self._spatial
        if x.ndim not in (d + 1, d + 2):
            raise ValueError(f"{name}({self.num_features}) expected {d + 1}-d (unbatched) or {d + 2}-d input, "
                             f"got input of shape {x.shape}")
        feature_dim = x.ndim - d - 1
        if x.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(f"{name}: expected input's size at dim={feature_dim} to match num_features "
                                 f"({self.num_features}), but got: {x.shape[feature_dim]} (input {x.shape})")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can silence this "
                          "warning by not passing in num_features, which is not used because affine=False",
                          UserWarning, stacklevel=2)
        unbatched = x.ndim == d + 1
        if unbatched:
            x = x.unsqueeze(0)
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            self.momentum if self.momentum is not None else 0.0, self.eps)
        return y[0] if unbatched else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of (N, C, L) or (C, L) input: each (sample, channel) normalised over
    its positions (biased variance). ``affine`` adds a per-channel weight (ones) and bias (zeros);
    ``track_running_stats`` keeps running statistics (updated in training, used in eval), as torch."""

    _spatial = 1


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of (N, C, H, W) or (C, H, W) input; see :class:`InstanceNorm1d`."""

    _spatial = 2


__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]
