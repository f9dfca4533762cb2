"""Batched matrix product, forward beside VJP."""
from __future__ import annotations

import numpy as np

from ..array.dtypes import is_bfloat16
from ..tape.op import Op, apply, constant_like
from ..tape.tensor import Tensor

_F32 = np.dtype("float32")


def mm(F, a, b):
    """``F.matmul(a, b)``, with a product of two float16 or two bfloat16 arrays in their dtype,
    accumulated in float32 (as cuBLAS and torch's CPU kernels do): on the host both are
    multiplied in float32 and the product rounded once, since NumPy has no float16 BLAS (a
    slow loop) and ``ml_dtypes`` returns bfloat16 products in float32."""
    d = a.dtype
    if d.itemsize != 2 or d != b.dtype or not (d.kind == "f" or is_bfloat16(d)):
        return F.matmul(a, b)
    if isinstance(a, np.ndarray):
        return F.matmul(a.astype(_F32), b.astype(_F32)).astype(d)
    out = F.matmul(a, b)
    return out if out.dtype == d else out.astype(d)


def matmul_into(F, a, b, dst):
    """``F.matmul(a, b)`` of 2-D ``a`` and ``b``, written straight into ``dst`` when it is an
    array (an empty gradient slot from a VJP's ``into``) of the product's shape and dtype: a
    weight gradient then needs no copy into its flat buffer."""
    if dst is None or a.ndim != 2 or b.ndim != 2 or dst.shape != (a.shape[0], b.shape[1]) \
            or not a.dtype == b.dtype == dst.dtype or a.dtype.itemsize == 2:
        return mm(F, a, b)
    return F.matmul(a, b, out=dst)


class Matmul(Op):
    """``a @ b`` with NumPy's rules: 1-D operands are promoted and the added axis
    dropped; leading batch axes broadcast (the engine sums them back)."""
    name = "matmul"
    saves = ('a', 'b')
    forward = staticmethod(lambda F, a, b: mm(F, a, b))

    @staticmethod
    def vjp(F, g, out, a, b, needs, into):
        a1, b1 = a.ndim == 1, b.ndim == 1
        # put back the axes NumPy dropped for 1-D operands
        gs = tuple(g.shape)
        if a1:
            a = F.reshape(a, (1,) + a.shape)
            gs = gs[:len(gs) - (0 if b1 else 1)] + (1,) + (() if b1 else gs[-1:])
        if b1:
            b = F.reshape(b, b.shape + (1,))
            gs = gs + (1,)
        g = F.reshape(g, gs)
        dst_a, dst_b = into or (None, None)
        ga = matmul_into(F, g, F.swapaxes(b, -1, -2), dst_a) if needs[0] else None
        gb = matmul_into(F, F.swapaxes(a, -1, -2), g, dst_b) if needs[1] else None
        if a1 and ga is not None:
            ga = ga[..., 0, :]
        if b1 and gb is not None:
            gb = gb[..., :, 0]
        return ga, gb


def matmul(a, b):
    """Matrix product with NumPy's broadcasting and 1-D rules."""
    if not isinstance(a, Tensor):
        a = constant_like(a, b)
    if not isinstance(b, Tensor):
        b = constant_like(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} (inner dimensions {ka} != {kb})")
    try:
        return apply(Matmul, a, b)
    except ValueError as e:
        if "broadcast" not in str(e):
            raise
        raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} (batch dimensions "
                         f"{a.shape[:-2]} and {b.shape[:-2]} cannot be broadcast together)") from None
