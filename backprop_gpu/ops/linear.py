"""Linear layers as single ops: ``x @ W.T + b`` and ``relu(x @ W.T + b)`` (and its dropout), forward beside VJP."""
from __future__ import annotations

from ..tape.op import Op, apply
from .linalg import matmul_into, mm


def _rows(g) -> int:
    n = 1
    for d in g.shape[:-1]:
        n *= d
    return n


class LinearNoBias(Op):
    name = "linear"
    saves = ("x", "w")

    @staticmethod
    def forward(F, x, w):
        return mm(F, x, w.T)  # mm: float16/bfloat16 products stay in their dtype


    @staticmethod
    def vjp(F, g, out, x, w, needs, into):
        n_out, n_in = w.shape
        rows = _rows(g)  # written out: a -1 beside a 0-sized axis is ambiguous (nn.Linear(0, 5))
        g2 = F.reshape(g, (rows, n_out))
        gx = F.reshape(mm(F, g2, w), x.shape) if needs[0] else None
        gw = matmul_into(F, F.swapaxes(g2, 0, 1), F.reshape(x, (rows, n_in)), into and into[1]) if needs[1] else None
        return gx, gw


class LinearOp(Op):
    """y = x @ W.T + b in one op: no transposed copy, bias added in place."""
    name = "linear"
    saves = ("x", "w")

    @staticmethod
    def forward(F, x, w, b):
        out = mm(F, x, w.T)
        out += b
        return out


    @staticmethod
    def vjp(F, g, out, x, w, b, needs, into):
        gx, gw = LinearNoBias.vjp(F, g, out, x, w, needs=needs[:2], into=into)
        gb = None
        if needs[2]:
            g2 = F.reshape(g, (_rows(g), w.shape[0]))
            dst = into and into[2]
            # straight into the bias's empty gradient slot when there is one: no copy after
            gb = F.sum(g2, axis=0) if dst is None or dst.dtype != g.dtype else F.sum(g2, axis=0, out=dst)
        return gx, gw, gb


class LinearReLU(Op):
    """relu(x @ W.T + b) in one op: bias and activation applied in place on the product, in
    one pass (a compiled kernel where the backend has one), and no separate ReLU output.
    ``dropout`` (a probability in (0, 1), given only when dropping) drops in that same pass
    (:meth:`~backprop_gpu.array.kernels.reference.Kernels.bias_relu_dropout_`), and the
    backward's ReLU mask scaled by 1 / (1 - dropout) is the dropout's gradient too."""
    name = "linear_relu"
    saves = ("x", "w", "out")

    @staticmethod
    def forward(F, x, w, *b, dropout=0.0):
        y = mm(F, x, w.T)
        b = b[0] if b else None
        return F.bias_relu_dropout_(y, b, dropout) if dropout else F.bias_relu_(y, b)

    @staticmethod
    def vjp(F, g, out, x, w, *b, needs, into, dropout=0.0):
        scale = 1 / (1 - dropout)
        if b and needs[2]:  # the bias gradient (column sums) in the same pass as the ReLU mask
            dst = into and into[2]
            if dst is not None and dst.dtype == g.dtype:  # written into the bias's empty gradient slot
                g, gb = F.relu_backward_colsum_into(g, out, dst, scale)
            else:
                g, gb = F.relu_backward_colsum(g, out, scale)
            return LinearNoBias.vjp(F, g, out, x, w, needs=needs[:2], into=into) + (gb,)
        g = F.relu_backward(g, out, scale)
        grads = LinearNoBias.vjp(F, g, out, x, w, needs=needs[:2], into=into)
        return grads + (None,) if b else grads


def _check_linear(x, weight, bias):
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                         f"(expected a 2-d weight and an input whose last dimension is its second)")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape} "
                         f"(expected ({weight.shape[0]},))")


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight of shape (out_features, in_features): one op."""
    _check_linear(x, weight, bias)
    if bias is None:
        return apply(LinearNoBias, x, weight)
    return apply(LinearOp, x, weight, bias)


def linear_relu(x, weight, bias=None, dropout: float = 0.0):
    """``relu(linear(x, weight, bias))`` as one op, followed by inverted dropout with probability
    ``dropout`` (in [0, 1), 0 for none; the mask from ``x``'s backend generator, the same draws as
    :func:`~backprop_gpu.nn.functional.dropout`'s) in the same pass. :class:`~backprop_gpu.nn.Sequential`
    uses it for a :class:`~backprop_gpu.nn.Linear` followed by a :class:`~backprop_gpu.nn.ReLU` (and a
    :class:`~backprop_gpu.nn.Dropout`)."""
    _check_linear(x, weight, bias)
    b = () if bias is None else (bias,)
    dropout = float(dropout)
    if dropout == 0:  # no keyword: the op's plain call
        return apply(LinearReLU, x, weight, *b)
    if not 0 < dropout < 1:
        raise ValueError(f"linear_relu: dropout probability has to be in [0, 1), but got {dropout}")
    return apply(LinearReLU, x, weight, *b, dropout=dropout)


__all__ = ["linear", "linear_relu"]
