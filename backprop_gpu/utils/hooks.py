"""``bg.utils.hooks``: the handle ``register_hook`` and ``register_forward_hook`` return (``torch.utils.hooks``)."""
from ..tape.hooks import RemovableHandle

__all__ = ["RemovableHandle"]
