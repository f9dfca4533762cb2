"""The reference target: the rule's scalar function applied to whole arrays."""
from __future__ import annotations

import numpy as np

from ..optim.rules import scalar_fn, state_slots


def build(rule_name, flags, dtype):
    fn = scalar_fn(rule_name, flags, np.sqrt, np.maximum)
    slots = state_slots(rule_name, flags)
    zero = np.dtype(dtype).type(0)

    def kernel(p, g, states, hypers):
        res = fn(p, g, *[zero if k is None else states[k] for k in slots], *hypers)
        p[...] = res[0]
        for k, r in zip(slots, res[1:]):
            if k is not None:
                states[k][...] = r
    return kernel
