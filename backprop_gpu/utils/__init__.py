"""``bg.utils``: PyTorch's ``torch.utils`` surface (``bg.utils.data``)."""
from . import data, dlpack, hooks, serialization

__all__ = ["data", "dlpack", "hooks", "serialization"]
