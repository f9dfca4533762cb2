"""Gradient clipping, fused over flat gradient buffers."""
from __future__ import annotations

import math

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


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale gradients in place so their total ``norm_type`` norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``; returns the total norm before clipping.
    Gradients that are views of one flat buffer are reduced and scaled as that
    buffer, in one pass each, and without a host synchronisation.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    if max_norm < 0:
        raise ValueError(f"max_norm must be non-negative, got {max_norm}")
    if not params:
        from ..ops.creation import tensor
        return tensor(0.0)
    backend = params[0].backend
    xp = backend.xp
    chunks = _chunks([p.grad.array for p in params])
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
