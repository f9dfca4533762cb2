"""``bg.utils``: PyTorch's ``torch.utils`` surface (``bg.utils.data``)."""
from . import data, hooks, serialization

__all__ = ["data", "hooks", "serialization"]
