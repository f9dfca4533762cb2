"""Gradient clipping: moved to :mod:`backprop_gpu.nn.utils` (torch's ``torch.nn.utils``); re-exported here."""
from ..nn.utils import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
