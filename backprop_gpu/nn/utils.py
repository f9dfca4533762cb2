"""``bg.nn.utils``: ``torch.nn.utils``'s gradient clipping and parameter/vector conversion.

The clipping functions work on flat gradient buffers: gradients that are views of one
buffer (an optimizer's) are reduced and scaled as that buffer, in one pass each, without a
host synchronisation. (They lived in ``optim.clip``, which still re-exports them.)
"""
from __future__ import annotations

import math
import numbers

from ..ops.creation import tensor
from ..ops.joining import concatenate
from ..tape.mode import no_grad
from ..tape.tensor import Tensor


def _chunks(grads):
    """The arrays to reduce: a whole flat buffer once when every view of it is present."""
    by_base, loose = {}, []
    for g in grads:
        b = g.base
        if b is not None and b.ndim == 1:
            by_base.setdefault(id(b), (b, []))[1].append(g)
        else:
            loose.append(g)
    out = list(loose)
    for b, gs in by_base.values():
        if sum(g.size for g in gs) == b.size:
            out.append(b)
        else:
            out.extend(gs)
    return out


def _with_grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """Scale gradients in place so their total ``norm_type`` norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``; returns the total norm before clipping (a 0-d
    tensor). ``foreach`` (torch's implementation switch) is accepted and ignored: the
    clipping is always one pass per flat buffer.
    """
    params = _with_grads(parameters)
    if max_norm < 0:
        raise ValueError(f"max_norm must be non-negative, got {max_norm}")
    if not params:
        return tensor(0.0)
    backend = params[0].backend
    xp = backend.xp
    chunks = _chunks([p.grad.array for p in params])
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = xp.max(xp.stack([xp.max(xp.abs(c)) for c in chunks]))
    else:
        parts = [xp.sum(xp.abs(c) ** norm_type) if norm_type != 2 else xp.dot(c.ravel(), c.ravel()) for c in chunks]
        total = xp.sum(xp.stack(parts)) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({float(total)})")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0).astype(chunks[0].dtype)
    for c in chunks:
        c *= coef
    for p in params:
        p.grad._version[0] += 1
    return Tensor._make(total, backend)


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``, as
    ``torch.nn.utils.clip_grad_value_`` (returns None); one pass per flat buffer."""
    if not isinstance(clip_value, numbers.Real) or isinstance(clip_value, bool):
        raise TypeError(f"clip_value must be a number, got {type(clip_value).__name__}")
    params = _with_grads(parameters)
    v = float(clip_value)
    for c in _chunks([p.grad.array for p in params]):
        params[0].backend.xp.clip(c, -v, v, out=c)
    for p in params:
        p.grad._version[0] += 1


def parameters_to_vector(parameters) -> Tensor:
    """The parameters flattened and concatenated into one 1-d tensor (differentiable), as
    ``torch.nn.utils.parameters_to_vector``."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters_to_vector: expected Tensors, got {type(p).__name__} at position {i}")
        if p.device != params[0].device:
            raise ValueError(f"parameters_to_vector: parameter {i} is on {p.device}, parameter 0 on "
                             f"{params[0].device}; all must be on one device")
    return concatenate([p.reshape(-1) for p in params])


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of the 1-d ``vec`` into ``parameters``, as
    ``torch.nn.utils.vector_to_parameters`` (returns None).

    The values are copied into each parameter's own storage (torch rebinds ``.data`` to views
    of ``vec``): parameters stay views of their optimizer's flat buffer."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected a Tensor, but got: {type(vec).__name__}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    need = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != need:
        raise ValueError(f"vector_to_parameters: vec has shape {vec.shape} but the parameters hold {need} "
                         f"elements; a 1-d vector of that length is expected")
    with no_grad():
        start = 0
        for p in params:
            n = p.numel()
            p.copy_(vec[start:start + n].reshape(p.shape))
            start += n


__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]
