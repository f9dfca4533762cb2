"""``bg.autograd``: PyTorch's ``torch.autograd`` surface over the tape.

``grad``, ``backward``, ``Function``, the grad-mode switches, anomaly detection
and ``gradcheck``.
"""
from ..tape.engine import GraphFreedError
from ..tape.mode import (detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled, no_grad,
                         set_detect_anomaly, set_grad_enabled)
from ..tape.tensor import grad
from .function import Function, FunctionCtx
from .gradcheck import GradcheckError, gradcheck


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate the gradients of ``tensors`` (a tensor or a sequence) into the leaves' ``.grad``,
    as ``torch.autograd.backward``."""
    ts = [tensors] if hasattr(tensors, "backward") else list(tensors)
    gs = [None] * len(ts) if grad_tensors is None else (
        [grad_tensors] if hasattr(grad_tensors, "shape") else list(grad_tensors))
    if len(gs) != len(ts):
        raise RuntimeError(f"backward got {len(gs)} grad_tensors for {len(ts)} tensors")
    keep = create_graph if retain_graph is None else retain_graph
    for i, (t, g) in enumerate(zip(ts, gs)):
        t.backward(g, retain_graph=keep or i < len(ts) - 1, create_graph=create_graph)


__all__ = ["Function", "FunctionCtx", "grad", "backward", "gradcheck", "GradcheckError", "GraphFreedError", "no_grad",
           "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled"]
