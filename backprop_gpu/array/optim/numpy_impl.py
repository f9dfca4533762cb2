"""The reference target: the rule's scalar function applied to whole arrays.

Vectorised NumPy makes temporaries, so this is the slowest target; it is the
one every other target is tested against.
"""
from __future__ import annotations

import numpy as np

from .precision import compute_dtype
from .rules import get, scalar_fn, state_slots


def build(rule_name, flags, dtype, masked=False, device=False):
    """``kernel(p, g, states, hypers)``: the rule on whole arrays of ``dtype``, results written back in place.

    float16 and bfloat16 ``p`` and ``g`` are computed in float32 (the states' dtype) from float32 master
    weights, the last of ``states`` (``codegen.loop_source``'s ``w``: used where it rounds to ``p``, else
    ``p`` itself), which the step writes, and ``p`` is stored as the master rounded with NumPy's (or
    ``ml_dtypes``') cast, to nearest even.
    ``masked``: ``kernel(p, g, states, hypers, mask)`` writes only where ``mask`` is nonzero.
    ``device``: ``kernel(p, g, states, consts, scalars[, mask])``, the device-scalar form (see
    ``codegen``), the same steps as the compiled targets take them."""
    fn = scalar_fn(rule_name, flags, np.sqrt, np.maximum)
    slots = state_slots(rule_name, flags)
    ct = compute_dtype(dtype)
    low = ct != np.dtype(dtype)
    t = ct.type
    zero = t(0)

    hfn = get(rule_name).hyper_math(flags)

    def device_kernel(p, g, states, consts, scalars, mask=None):
        lr, step, inv_scale, found_inf = scalars
        if found_inf[0] != 0:
            return
        hypers = hfn(float(lr[0]), float(step[0]) + 1.0, *(float(c) for c in consts))
        kernel(p, g, states, hypers, mask, t(inv_scale[0]))

    def kernel(p, g, states, hypers, mask=None, inv=None):
        if low:
            *states, w = states
            bits = p.view(np.uint16)
            pc = np.where(w.astype(p.dtype).view(np.uint16) == bits, w, p.astype(ct))
            gc = g.astype(ct)
        else:
            pc, gc = p, g
        if inv is not None:
            gc = gc * inv
        # hypers in the compute dtype, as the compiled targets take them (a float64 scalar would promote)
        res = fn(pc, gc, *[zero if k is None else states[k] for k in slots], *[t(h) for h in hypers])
        outs = [p] + [None if k is None else states[k] for k in slots]
        if low:
            outs, res = [w] + outs, (res[0],) + tuple(res)
        for dst, r in zip(outs, res):
            if dst is not None:
                if r.dtype != dst.dtype:
                    r = r.astype(dst.dtype)  # float32 to float16/bfloat16: round to nearest even
                if mask is None:
                    dst[...] = r
                else:
                    np.copyto(dst, r, where=mask.view(bool))
    # the same function either way: the mask is optional here
    return device_kernel if device else kernel


def build_check(dtype):
    """``check(g, found_inf)``: ``found_inf[0] = 1`` if ``g`` holds an inf or NaN."""
    low = compute_dtype(dtype) != np.dtype(dtype)

    def check(g, found_inf):
        if not np.isfinite(g.astype(np.float32) if low else g).all():
            found_inf[0] = 1
    return check
