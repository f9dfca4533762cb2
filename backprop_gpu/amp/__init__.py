"""Mixed precision, as ``torch.amp``: :class:`autocast` and :class:`GradScaler`.

:mod:`.lists` says which ops autocast runs in the low dtype and which in float32.
"""
from .autocast_mode import autocast, get_autocast_dtype, is_autocast_available, is_autocast_enabled
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_enabled", "get_autocast_dtype", "is_autocast_available"]
