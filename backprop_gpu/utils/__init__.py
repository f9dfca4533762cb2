"""``bg.utils``: PyTorch's ``torch.utils`` surface (``bg.utils.data``)."""
from . import data

__all__ = ["data"]
