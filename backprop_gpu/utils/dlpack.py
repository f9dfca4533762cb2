"""``bg.utils.dlpack``: ``torch.utils.dlpack``'s ``from_dlpack`` and ``to_dlpack``."""
from ..ops.creation import from_dlpack
from ..tape.tensor import Tensor


def to_dlpack(tensor: Tensor):
    """The DLPack capsule of ``tensor``'s memory (shared, not copied)."""
    return tensor.__dlpack__()


__all__ = ["from_dlpack", "to_dlpack"]
