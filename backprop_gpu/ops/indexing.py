"""PyTorch's indexing ops: gather, index_select, take_along_dim, masked_fill, topk and sort as
index keys for :func:`~backprop_gpu.ops.shape.getitem`; scatter, scatter_add and index_add (and
their in-place forms), index_fill and masked_scatter as ops of their own.

The reading ops build the integer-array key that picks their elements and let ``getitem`` do the
rest, so the gradient (a scatter-add, repeats summed) and the version check of the index come from
the one op that already has them. The writing ops' VJPs are those reads.
"""
from __future__ import annotations

import numbers

from ..tape.op import Op, apply, constant_like, normalize_axis
from ..tape.tensor import Tensor, plain_key
from . import return_types
from .elementwise import where
from .inplace import needs_recording, operand_array, record_inplace
from .shape import getitem


def _dim(x, dim, what):
    if not isinstance(dim, numbers.Integral):
        raise TypeError(f"{what}: dim must be an int, got {dim!r}")
    return normalize_axis(dim, max(x.ndim, 1))[0]


def _index_tensor(index, x, what):
    if not isinstance(index, Tensor):
        index = Tensor._make(x.backend.asarray(index), x.backend)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{what}: the index must be an integer tensor, got dtype {index.dtype}")
    if index.device != x.device:
        raise RuntimeError(f"{what}: index on {index.device} but input on {x.device}")
    return index


def _along(x, d, index):
    """The key ``x[i_0, .., index, .., i_last]`` with the other positions as broadcasting aranges
    over ``index``'s shape: ``out[i][j] = x[i][index[i][j]]`` for ``d = 1``."""
    xp = x.backend.xp
    key = []
    for i, n in enumerate(index.shape):
        if i == d:
            key.append(index)
        else:
            key.append(Tensor._make(xp.arange(n).reshape([n if k == i else 1 for k in range(index.ndim)]),
                                    x.backend))
    return tuple(key)


def gather(input, dim, index):  # noqa: A002 - PyTorch's name
    """``torch.gather``: ``out[i][j] = input[index[i][j]][j]`` along ``dim`` 0 (and so on); the
    gradient scatter-adds back, repeated indices summed."""
    index = _index_tensor(index, input, "gather")
    d = _dim(input, dim, "gather")
    if index.ndim != input.ndim:
        raise RuntimeError(f"gather: index of shape {index.shape} must have as many dimensions as the input "
                           f"of shape {input.shape}")
    for i, (m, n) in enumerate(zip(index.shape, input.shape)):
        if i != d and m > n:
            raise RuntimeError(f"gather: index of shape {index.shape} is larger than the input of shape "
                               f"{input.shape} in dimension {i}")
    return getitem(input, _along(input, d, index))


take_along_dim = gather  # same semantics when the index has the input's rank


def index_select(input, dim, index):  # noqa: A002
    """``torch.index_select``: the entries of ``input`` at the 1-D ``index`` along ``dim``."""
    index = _index_tensor(index, input, "index_select")
    if index.ndim > 1:
        raise IndexError(f"index_select: index must be 0- or 1-D, got shape {index.shape}")
    d = _dim(input, dim, "index_select")
    return getitem(input, (slice(None),) * d + (index.reshape(-1),))


def masked_fill(input, mask, value):  # noqa: A002
    """``torch.masked_fill``: ``value`` where the boolean ``mask`` (broadcast to ``input``) is true."""
    if not isinstance(mask, Tensor):
        mask = Tensor._make(input.backend.asarray(mask), input.backend)
    if mask.dtype.kind != "b":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got dtype {mask.dtype}")
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
    return where(mask, constant_like(value, input) if not isinstance(value, Tensor) else value, input)


def _order(x, dim, descending):
    """Indices that sort ``x`` along ``dim``, stably (ties keep their order)."""
    xp = x.backend.xp
    a = x.array
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable")
    # negate, keeping integer extremes in range; a stable sort of -x keeps ties in order
    if a.dtype.kind in "iub":
        return xp.argsort(-a.astype(xp.float64), axis=dim, kind="stable")
    # NaN counts as the largest value (PyTorch's order), so it leads a descending sort: a second,
    # stable sort on "is not NaN" moves the NaNs to the front and keeps the rest in order
    order = xp.argsort(-a, axis=dim, kind="stable")
    nan_last = ~xp.isnan(xp.take_along_axis(a, order, axis=dim))
    return xp.take_along_axis(order, xp.argsort(nan_last, axis=dim, kind="stable"), axis=dim)


def sort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    """``torch.sort``: the named tuple ``(values, indices)``; values are differentiable."""
    if input.ndim == 0:
        return return_types.sort(input.clone(), Tensor._make(input.backend.xp.zeros((), "int64"), input.backend))
    d = _dim(input, dim, "sort")
    idx = Tensor._make(_order(input, d, descending).astype("int64", copy=False), input.backend)
    return return_types.sort(gather(input, d, idx), idx)


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    """``torch.topk``: the ``k`` largest (or smallest) entries along ``dim`` and their indices,
    sorted; the named tuple ``(values, indices)``."""
    d = _dim(input, dim, "topk")
    n = input.shape[d] if input.ndim else 1
    if not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise RuntimeError(f"topk: k={k!r} is out of range for dimension {dim} of size {n}")
    if input.ndim == 0:
        return return_types.topk(input.clone(), Tensor._make(input.backend.xp.zeros((), "int64"), input.backend))
    order = _order(input, d, largest)
    idx = Tensor._make(order[(slice(None),) * d + (slice(0, int(k)),)].astype("int64", copy=False), input.backend)
    return return_types.topk(gather(input, d, idx), idx)


# -- writing ops: scatter, scatter_add, index_add, index_fill, masked_scatter ------------------------
def _check_range(index, n, d, what):
    """Torch's error for an index outside ``[0, n)``. On a GPU, reading the index back would cost a
    device-to-host sync per call, so the check is deferred: computed there, and raised at the next
    sync (see :meth:`~backprop_gpu.array.modules.CupyArrays.defer_check`)."""
    if not index.numel():
        return
    if index.backend.is_host:
        _raise_out_of_range(index.array, n, d, what)
        return
    arrays, a = index.backend.arrays, index.array
    with arrays.cuda_device:
        bad = arrays.xp.logical_or(a < 0, a >= n).any()
    arrays.defer_check(bad, lambda: _raise_out_of_range(index.numpy(), n, d, what))


def _raise_out_of_range(a, n, d, what):
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= n:
        raise RuntimeError(f"{what}: index {lo if lo < 0 else hi} is out of bounds for dimension {d} "
                           f"with size {n}")


def _same_dtype(x, src, what):
    if src.dtype != x.dtype:
        raise RuntimeError(f"{what}: expected self.dtype to be equal to src.dtype, got {x.dtype} and {src.dtype}")
    if src.device != x.device:
        raise RuntimeError(f"{what}: src on {src.device} but input on {x.device}")


def _scatter_args(what, input, dim, index, src):  # noqa: A002 - PyTorch's name
    """Validated ``(d, index, src)`` of scatter/scatter_add, torch's rules: index, input and src of
    one rank; index no larger than src anywhere, nor than input outside ``dim``. ``src`` comes
    back cut to the index's shape (torch reads only that corner of it), or None for a scalar."""
    index = _index_tensor(index, input, what)
    d = _dim(input, dim, what)
    if index.ndim != input.ndim:
        raise RuntimeError(f"{what}: index of shape {index.shape} must have as many dimensions as the input "
                           f"of shape {input.shape}")
    if isinstance(src, Tensor):
        _same_dtype(input, src, what)
        if src.ndim != input.ndim:
            raise RuntimeError(f"{what}: src of shape {src.shape} must have as many dimensions as the input "
                               f"of shape {input.shape}")
    if index.numel():
        for i, m in enumerate(index.shape):
            if (i != d and m > input.shape[i]) or (isinstance(src, Tensor) and m > src.shape[i]):
                of_src = f"src of shape {src.shape} in any dimension, and than " if isinstance(src, Tensor) else ""
                raise RuntimeError(f"{what}: index of shape {index.shape} must be no larger than {of_src}the input "
                                   f"of shape {input.shape} apart from dimension {d}")
        _check_range(index, input.shape[d], d, what)
    if isinstance(src, Tensor) and src.shape != index.shape:
        src = getitem(src, tuple(slice(0, m) for m in index.shape))
    return d, index, src


def _flat_positions(x, d, index):
    """Where ``x[i][index[i][j]]`` (and so on) lies in ``x`` flattened in C order, for each entry of
    ``index``: one integer array, so the scatter is one 1-D scatter-add (compiled on numba)."""
    xp = x.backend.xp
    strides = [1] * x.ndim
    for i in range(x.ndim - 2, -1, -1):
        strides[i] = strides[i + 1] * x.shape[i + 1]
    flat = index.array.astype(xp.int64) * strides[d]  # a fresh array: in-place adds below
    for i, n in enumerate(index.shape):
        if i != d and n > 1:
            flat += (xp.arange(n, dtype=xp.int64) * strides[i]).reshape([n if k == i else 1 for k in range(x.ndim)])
    return flat.reshape(-1)


def _read_flat(F, g, flat, shape):
    """``g`` flattened, read at ``flat``, shaped ``shape``: the gather that is the VJP of a scatter."""
    return F.reshape(F.reshape(g, (-1,))[flat], shape)


class ScatterAdd(Op):
    """``x`` plus ``src`` added in at the flat positions ``flat`` (repeats accumulate, unbuffered)."""
    name = "scatter_add"
    saves = ()

    @staticmethod
    def forward(F, x, src, flat):
        acc = F.index_backward(F.ascontiguousarray(src).reshape(-1), (x.size,), (flat,))
        return x + acc.reshape(x.shape)

    @staticmethod
    def vjp(F, g, out, x, src, flat, needs):
        return (g if needs[0] else None), (_read_flat(F, g, flat, src.shape) if needs[1] else None)


class Scatter(Op):
    """``x`` with ``src`` written at the flat positions ``flat``; of repeated positions one write
    wins (the last, on the CPU; torch leaves it unspecified)."""
    name = "scatter"
    saves = ()

    @staticmethod
    def forward(F, x, src, flat):
        out = F.array(x, copy=True, order="C")
        out.reshape(-1)[flat] = src.reshape(-1)
        return out

    @staticmethod
    def vjp(F, g, out, x, src, flat, needs):
        gx = None
        if needs[0]:  # zero where overwritten
            xp = g.backend.xp if F.records else F
            hit = xp.zeros(x.shape, dtype=bool)
            hit.reshape(-1)[flat] = True
            gx = F.where(hit, 0, g)
        return gx, (_read_flat(F, g, flat, src.shape) if needs[1] else None)


def _scalar_src(value, input, index):
    """``value`` (a number or 0-d tensor) as a constant src of the index's shape, without a sync."""
    xp = input.backend.xp
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"scatter: value must be a number or a 0-d tensor, got shape {value.shape}")
        return Tensor._make(xp.broadcast_to(value.array.astype(input.dtype), index.shape), input.backend)
    return Tensor._make(xp.full(index.shape, value, dtype=input.dtype), input.backend)


def _src_or_value(what, src, value):
    if (src is None) == (value is None):
        raise TypeError(f"{what}() takes exactly one of src and value")
    return src if value is None else value


def scatter(input, dim, index, src=None, *, value=None, reduce=None):  # noqa: A002 - PyTorch's names
    """``torch.scatter``: a copy of ``input`` with ``out[index[i][j]][j] = src[i][j]`` along ``dim`` 0
    (and so on); ``src`` may be a tensor or a number (``value``).

    Differentiable in ``input`` (zero where overwritten) and ``src`` (the gather at ``index``).
    Where ``index`` repeats a position, one of the writes wins, unspecified which (as in torch).
    ``reduce="add"`` is :func:`scatter_add`; ``"multiply"`` is not supported.
    """
    src = _src_or_value("scatter", src, value)
    if reduce is not None:
        if reduce != "add":
            raise NotImplementedError(f"scatter(reduce={reduce!r}) is not supported; reduce='add' is scatter_add")
        return scatter_add(input, dim, index, src if isinstance(src, Tensor) else _scalar_src(src, input, index))
    if input.ndim == 0:
        return scatter(input.reshape(1), dim, _index_tensor(index, input, "scatter").reshape(1),
                       src.reshape(1) if isinstance(src, Tensor) else src).reshape(())
    d, index, src = _scatter_args("scatter", input, dim, index, src)
    if not isinstance(src, Tensor):
        src = _scalar_src(src, input, index)
    return apply(Scatter, input, src, flat=_flat_positions(input, d, index))


def scatter_add(input, dim, index, src):  # noqa: A002
    """``torch.scatter_add``: a copy of ``input`` with ``out[index[i][j]][j] += src[i][j]`` along
    ``dim`` 0 (and so on); repeated indices accumulate. The gradient is the identity for ``input``
    and the gather at ``index`` for ``src``."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add: src must be a tensor, got {type(src).__name__}")
    if input.ndim == 0:
        return scatter_add(input.reshape(1), dim, _index_tensor(index, input, "scatter_add").reshape(1),
                           src.reshape(1)).reshape(())
    d, index, src = _scatter_args("scatter_add", input, dim, index, src)
    return apply(ScatterAdd, input, src, flat=_flat_positions(input, d, index))


def _index_add_args(what, input, dim, index, source):  # noqa: A002
    index = _index_tensor(index, input, what)
    if index.ndim > 1:
        raise IndexError(f"{what}: index must be a vector (0- or 1-D), got shape {index.shape}")
    if not isinstance(source, Tensor):
        raise TypeError(f"{what}: source must be a tensor, got {type(source).__name__}")
    if source.dtype != input.dtype:
        raise RuntimeError(f"{what}: self ({input.dtype}) and source ({source.dtype}) must have the same dtype")
    if source.device != input.device:
        raise RuntimeError(f"{what}: source on {source.device} but input on {input.device}")
    d = _dim(input, dim, what)
    shape, sshape = list(input.shape or (1,)), list(source.shape or (1,))
    if len(sshape) != len(shape) or any(a != b for i, (a, b) in enumerate(zip(shape, sshape)) if i != d):
        raise RuntimeError(f"{what}: source of shape {source.shape} must match the input of shape "
                           f"{input.shape} apart from dimension {d}")
    if sshape[d] != index.numel():
        raise RuntimeError(f"{what}: number of indices ({index.numel()}) should be equal to source.size({d}) "
                           f"({sshape[d]})")
    _check_range(index, shape[d], d, what)
    return d, index.reshape(-1)


class IndexAdd(Op):
    """``x`` plus ``alpha * src`` added in at ``key`` = ``(:, .., :, index)`` (repeats accumulate).
    The key keeps the index tensor, so the engine version-checks it."""
    name = "index_add"
    saves = ()

    @staticmethod
    def forward(F, x, src, key, alpha):
        axis, index = len(key) - 1, plain_key(key)[-1]
        if alpha != 1:
            src = src * alpha
        # rows first, so the scatter-add is one over rows (compiled on numba for any axis)
        rows = F.ascontiguousarray(F.moveaxis(src, axis, 0))
        acc = F.index_backward(rows, (x.shape[axis],) + rows.shape[1:], (index,))
        return x + F.moveaxis(acc, 0, axis)

    @staticmethod
    def vjp(F, g, out, x, src, key, alpha, needs):
        gs = None
        if needs[1]:  # index_select
            gs = g[key if F.records else plain_key(key)]
            if alpha != 1:
                gs = gs * alpha
        return (g if needs[0] else None), gs


def index_add(input, dim, index, source, *, alpha=1):  # noqa: A002
    """``torch.index_add``: a copy of ``input`` with ``alpha * source`` added at the 1-D ``index``
    along ``dim`` (``out[:, index[j]] += alpha * source[:, j]`` for ``dim`` 1); repeated indices
    accumulate. Differentiable in both; the gradient of ``source`` is ``index_select`` times alpha."""
    d, index = _index_add_args("index_add", input, dim, index, source)
    if input.ndim == 0:
        return apply(IndexAdd, input.reshape(1), source.reshape(1), key=(index,), alpha=alpha).reshape(())
    return apply(IndexAdd, input, source, key=(slice(None),) * d + (index,), alpha=alpha)


def _index_mask(input, dim, index, what):
    """A bool array broadcasting to ``input``: true at ``index`` along ``dim``."""
    index = _index_tensor(index, input, what)
    if index.ndim > 1:
        raise IndexError(f"{what}: index must be a vector (0- or 1-D), got shape {index.shape}")
    d = _dim(input, dim, what)
    n = input.shape[d] if input.ndim else 1
    _check_range(index, n, d, what)
    xp = input.backend.xp
    mask = xp.zeros(n, dtype=bool)
    mask[index.array.reshape(-1)] = True
    return d, mask.reshape([n if i == d else 1 for i in range(input.ndim)])


def index_fill(input, dim, index, value):  # noqa: A002
    """``torch.index_fill``: a copy of ``input`` with ``value`` (a number or 0-d tensor) at the
    1-D ``index`` along ``dim``; differentiable in ``input`` (zero where filled) and a tensor ``value``."""
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"index_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
    _, mask = _index_mask(input, dim, index, "index_fill")
    return where(Tensor._make(mask, input.backend), value if isinstance(value, Tensor)
                 else constant_like(value, input), input)


def masked_scatter(input, mask, source):  # noqa: A002
    """``torch.masked_scatter``: a copy of ``input`` with the leading elements of ``source`` (in
    row-major order) written where the boolean ``mask`` (broadcast to ``input``) is true.
    Differentiable in both."""
    if not isinstance(mask, Tensor):
        mask = Tensor._make(input.backend.asarray(mask), input.backend)
    if mask.dtype.kind != "b":
        raise TypeError(f"masked_scatter: mask must be a bool tensor, got dtype {mask.dtype}")
    if not isinstance(source, Tensor):
        raise TypeError(f"masked_scatter: source must be a tensor, got {type(source).__name__}")
    _same_dtype(input, source, "masked_scatter")
    xp = input.backend.xp
    try:
        m = xp.broadcast_to(mask.array, input.shape)
    except ValueError:
        raise RuntimeError(f"masked_scatter: mask of shape {mask.shape} does not broadcast to the input of "
                           f"shape {input.shape}") from None
    # the k-th true position takes source's k-th element: a running count, no sync for the count
    pos = xp.cumsum(m.reshape(-1), dtype=xp.int64) - 1
    if input.backend.is_host and m.size and int(pos[-1]) + 1 > source.numel():
        raise RuntimeError(f"masked_scatter: the mask has {int(pos[-1]) + 1} true elements but source of shape "
                           f"{source.shape} has only {source.numel()}")
    if source.numel() == 0:  # then the mask is all false (checked on the host)
        return input.clone()
    pos = xp.clip(pos, 0, source.numel() - 1).reshape(input.shape)
    picked = getitem(source.reshape(-1), Tensor._make(pos, input.backend))
    return where(mask, picked, input)  # the mask itself, so the engine version-checks it


# -- in-place forms: the rule of the Tensor's in-place ops (no grad-requiring tensor involved) --------
def _check_inplace_operand(self, what, *operands):
    for t in operands:  # nothing to record (see needs_recording): only the devices to check
        operand_array(self, t)


def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
    """In-place :func:`scatter` (``Tensor.scatter_``), recorded on the graph where grad is involved."""
    src = _src_or_value("scatter_", src, value)
    if reduce is not None:
        if reduce != "add":
            raise NotImplementedError(f"scatter_(reduce={reduce!r}) is not supported; reduce='add' is scatter_add_")
        return scatter_add_(self, dim, index, src if isinstance(src, Tensor) else _scalar_src(src, self, index))
    if needs_recording(self, (src,)):
        return record_inplace(self, "scatter_", lambda old: scatter(old, dim, index, src), False)
    _check_inplace_operand(self, "scatter_", src, index)
    if self.ndim == 0:
        scatter_(self.reshape(1), dim, _index_tensor(index, self, "scatter_").reshape(1),
                 src.reshape(1) if isinstance(src, Tensor) else src)
        return self._bump()
    d, index, src = _scatter_args("scatter_", self, dim, index, src)
    key = plain_key(_along(self, d, index))
    self.array[key] = src.array if isinstance(src, Tensor) else src
    return self._bump()


def scatter_add_(self, dim, index, src):
    """In-place :func:`scatter_add` (``Tensor.scatter_add_``); repeated indices accumulate."""
    if needs_recording(self, (src,)):
        return record_inplace(self, "scatter_add_", lambda old: scatter_add(old, dim, index, src), False)
    _check_inplace_operand(self, "scatter_add_", src, index)
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add_: src must be a tensor, got {type(src).__name__}")
    if self.ndim == 0:
        scatter_add_(self.reshape(1), dim, _index_tensor(index, self, "scatter_add_").reshape(1), src.reshape(1))
        return self._bump()
    d, index, src = _scatter_args("scatter_add_", self, dim, index, src)
    self.backend.scatter_add(self.array, plain_key(_along(self, d, index)), src.array)
    return self._bump()


def index_add_(self, dim, index, source, *, alpha=1):
    """In-place :func:`index_add` (``Tensor.index_add_``); repeated indices accumulate."""
    if needs_recording(self, (source,)):
        return record_inplace(self, "index_add_", lambda old: index_add(old, dim, index, source, alpha=alpha), False)
    _check_inplace_operand(self, "index_add_", source, index)
    d, index = _index_add_args("index_add_", self, dim, index, source)
    src = source.array if alpha == 1 else source.array * alpha
    if self.ndim == 0:
        self.backend.scatter_add(self.array.reshape(1), (index.array,), src.reshape(1))
    else:
        self.backend.scatter_add(self.array, (slice(None),) * d + (index.array,), src)
    return self._bump()


def index_fill_(self, dim, index, value):
    """In-place :func:`index_fill` (``Tensor.index_fill_``)."""
    if needs_recording(self, (value,)):
        return record_inplace(self, "index_fill_", lambda old: index_fill(old, dim, index, value), False)
    _check_inplace_operand(self, "index_fill_", value, index)
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"index_fill_: value must be a number or a 0-d tensor, got shape {value.shape}")
    _, mask = _index_mask(self, dim, index, "index_fill_")
    xp = self.backend.xp
    xp.copyto(self.array, value.array if isinstance(value, Tensor) else value,
              where=xp.broadcast_to(mask, self.shape), casting="unsafe")
    return self._bump()


__all__ = ["gather", "take_along_dim", "index_select", "masked_fill", "sort", "topk", "scatter", "scatter_add",
           "index_add", "index_fill", "masked_scatter", "scatter_", "scatter_add_", "index_add_", "index_fill_"]
