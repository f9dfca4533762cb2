"""The reference target: the rule's scalar function applied to whole arrays.

Vectorised NumPy makes temporaries, so this is the slowest target; it is the
one every other target is tested against.
"""
from __future__ import annotations

import numpy as np

from .rules import scalar_fn, state_slots


def build(rule_name, flags, dtype, masked=False):
    """``kernel(p, g, states, hypers)``: the rule on whole arrays of ``dtype``, results written back in place.

    ``masked``: ``kernel(p, g, states, hypers, mask)`` writes only where ``mask`` is nonzero."""
    fn = scalar_fn(rule_name, flags, np.sqrt, np.maximum)
    slots = state_slots(rule_name, flags)
    t = np.dtype(dtype).type
    zero = t(0)

    def kernel(p, g, states, hypers, mask=None):
        # hypers in the arrays' dtype, as the compiled targets take them (a float64 scalar would promote)
        res = fn(p, g, *[zero if k is None else states[k] for k in slots], *[t(h) for h in hypers])
        outs = [p] + [None if k is None else states[k] for k in slots]
        for dst, r in zip(outs, res):
            if dst is not None:
                if mask is None:
                    dst[...] = r
                else:
                    np.copyto(dst, r, where=mask.view(bool))
    return kernel  # the same function either way: the mask is optional here
