"""``bg.utils``: PyTorch's ``torch.utils`` surface (``bg.utils.data``)."""
from . import data, serialization

__all__ = ["data", "serialization"]
