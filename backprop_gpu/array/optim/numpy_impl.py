"""The reference target: the rule's scalar function applied to whole arrays.

Vectorised NumPy makes temporaries, so this is the slowest target; it is the
one every other target is tested against.
"""
from __future__ import annotations

import numpy as np

from .precision import compute_dtype
from .rules import scalar_fn, state_slots


def build(rule_name, flags, dtype, masked=False):
    """``kernel(p, g, states, hypers)``: the rule on whole arrays of ``dtype``, results written back in place.

    float16 and bfloat16 ``p`` and ``g`` are computed in float32 (the states' dtype) and ``p`` is stored
    back with NumPy's (or ``ml_dtypes``') cast, which rounds to nearest even.
    ``masked``: ``kernel(p, g, states, hypers, mask)`` writes only where ``mask`` is nonzero."""
    fn = scalar_fn(rule_name, flags, np.sqrt, np.maximum)
    slots = state_slots(rule_name, flags)
    ct = compute_dtype(dtype)
    low = ct != np.dtype(dtype)
    t = ct.type
    zero = t(0)

    def kernel(p, g, states, hypers, mask=None):
        pc, gc = (p.astype(ct), g.astype(ct)) if low else (p, g)
        # hypers in the compute dtype, as the compiled targets take them (a float64 scalar would promote)
        res = fn(pc, gc, *[zero if k is None else states[k] for k in slots], *[t(h) for h in hypers])
        outs = [p] + [None if k is None else states[k] for k in slots]
        for dst, r in zip(outs, res):
            if dst is not None:
                if r.dtype != dst.dtype:
                    r = r.astype(dst.dtype)  # float32 to float16/bfloat16: round to nearest even
                if mask is None:
                    dst[...] = r
                else:
                    np.copyto(dst, r, where=mask.view(bool))
    return kernel  # the same function either way: the mask is optional here
