"""Inverted dropout as one op: the namespace's fused draw-and-scale forward, the saved mask's
product backward (one launch each way on the cupy backend)."""
from __future__ import annotations

import numpy as np

from ..tape.op import Op, apply, constant_like


class Dropout(Op):
    """``x * keep / (1 - p)``, ``keep`` the complement of the generator's Bernoulli(p) mask. The
    forward fills ``keep`` (a bool array of ``x``'s shape, passed empty), which the VJP reads."""
    name = "dropout"
    saves = ()

    @staticmethod
    def forward(F, x, *, keep, p):
        return F.dropout_(x, p, keep)

    @staticmethod
    def vjp(F, g, out, x, *, keep, p):
        if F.records:  # create_graph: the same product, recorded (the mask is a constant)
            return (g * constant_like(keep, g) * (1 / (1 - p)),)
        return (F.dropout_backward(g, keep, p),)


def dropout(x, p: float):
    """:class:`Dropout` of ``x`` with probability ``p`` in (0, 1), drawn from ``x``'s backend generator."""
    keep = x.backend.arrays.empty(x.shape, np.bool_)  # filled by the forward: no launch
    return apply(Dropout, x, keep=keep, p=float(p))
