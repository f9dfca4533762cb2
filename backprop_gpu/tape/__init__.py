"""Layer 2, the tape: the Tensor, the op base with ``apply``, grad modes and the backward engine.

It knows nothing of optimizers: a leaf's gradient slot in a flat buffer is an
attribute an optimizer sets on the leaf (see :func:`engine.deliver`).
"""
from .engine import GraphFreedError, check_saves, register_graph_namespace, run_backward
from .mode import (detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled, no_grad, set_detect_anomaly,
                   set_grad_enabled)
from .op import DeviceMismatchError, Op, apply
from .tensor import Tensor, grad, is_tensor

__all__ = ["Tensor", "Op", "apply", "grad", "is_tensor", "run_backward", "GraphFreedError", "check_saves",
           "register_graph_namespace", "DeviceMismatchError", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled"]
