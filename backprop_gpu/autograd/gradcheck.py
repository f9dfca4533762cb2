"""Check the tape's gradients against central finite differences (public API)."""
from __future__ import annotations

import numpy as np

from ..tape.tensor import Tensor, grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Compare the tape's vector-Jacobian product of ``fn`` with central differences.

    ``fn`` maps the tensors in ``inputs`` to one tensor (or a tuple of tensors).
    For a random cotangent ``v`` the analytic ``v^T J`` from one backward pass is
    compared element by element with ``(v·f(x + eps e_i) - v·f(x - eps e_i)) / 2 eps``.
    Inputs that require grad must be float64: float32 differences are too coarse.
    Returns True, or raises :class:`GradcheckError` naming the input and the worst element.
    """
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not diff:
        raise ValueError("gradcheck: no input requires grad")
    for t in diff:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs, got {t.dtype} for shape {t.shape}")

    def outputs():
        out = fn(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    outs = outputs()
    rng = np.random.default_rng(seed)
    vs = [rng.standard_normal(o.shape) for o in outs]

    def dot(os):
        return sum(float((o.numpy().astype(np.float64) * v).sum()) for o, v in zip(os, vs))

    live = [(o, v) for o, v in zip(outs, vs) if o.requires_grad]
    if not live:
        raise GradcheckError("gradcheck: fn's output does not depend on any input that requires grad")
    analytic = grad([o for o, _ in live], diff, grad_outputs=[Tensor._make(o.backend.asarray(v, dtype=o.dtype),
                                                                              o.backend) for o, v in live],
                    allow_unused=True)
    for k, (t, a) in enumerate(zip(diff, analytic)):
        a = np.zeros(t.shape) if a is None else a.numpy()
        num = np.zeros(t.shape)
        host = t.numpy()
        # grad mode stays on: fn may itself differentiate (gradcheck of a gradient)
        for i in np.ndindex(*t.shape):
            orig = host[i]
            for sign in (1, -1):
                host[i] = orig + sign * eps
                t.array[...] = t.backend.asarray(host)
                num[i] += sign * dot(outputs())
            host[i] = orig
        t.array[...] = t.backend.asarray(host)
        num /= 2 * eps
        err = np.abs(a - num)
        bad = ~(err <= atol + rtol * np.abs(num))  # NaN on either side is a failure, never a pass
        if bad.any():
            i = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -np.inf)),
                                 err.shape) if err.ndim else ()
            msg = (f"gradcheck failed for input {k} of shape {t.shape}: at index {tuple(int(j) for j in i)} "
                   f"analytic {float(a[i])!r} vs numerical {float(num[i])!r} ({int(bad.sum())} of {bad.size} elements off)")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
