"""PyTorch's tensor methods and functions that training scripts use: the same results as torch
(where torch is installed), gradients against finite differences in float64, on every backend."""
import numpy as np
import pytest

import backprop_gpu as bg
from helpers import idx, x64

try:
    import torch
except ImportError:  # the values and gradients are still checked against finite differences
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install torch==2.13.0)")


def _pair(backend, shape, seed=0, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape)
    return x64(backend, a, grad), (None if torch is None else torch.tensor(a, requires_grad=grad))


def _same(ours, theirs, **kw):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **{"rtol": 1e-12, "atol": 1e-12, **kw})


# -- values and gradients, against torch -------------------------------------------------------
CASES = {
    "gather": (lambda m, x, ix: m.gather(x, 1, ix([[0, 0, 3], [1, 0, 2], [3, 3, 3]])), (3, 4)),
    "gather_dim0": (lambda m, x, ix: m.gather(x, 0, ix([[2, 0, 1, 1]])), (3, 4)),
    "index_select": (lambda m, x, ix: m.index_select(x, 1, ix([3, 0, 3])), (3, 4)),
    "masked_fill": (lambda m, x, ix: x.masked_fill(x > 0.2, -1.5), (3, 4)),
    "cumsum": (lambda m, x, ix: x.cumsum(1), (3, 4)),
    "cumsum_dim0": (lambda m, x, ix: m.cumsum(x, dim=0), (3, 4)),
    "norm": (lambda m, x, ix: x.norm(), (3, 4)),
    "norm_dim": (lambda m, x, ix: m.norm(x, dim=1, keepdim=True), (3, 4)),
    "norm_p1": (lambda m, x, ix: m.norm(x, p=1), (3, 4)),
    "norm_p3": (lambda m, x, ix: m.norm(x, p=3, dim=0), (3, 4)),
    "norm_inf": (lambda m, x, ix: m.norm(x, p=float("inf")), (3, 4)),
    "sort_values": (lambda m, x, ix: m.sort(x, dim=1).values, (3, 4)),
    "sort_descending": (lambda m, x, ix: x.sort(0, descending=True).values, (3, 4)),
    "topk_values": (lambda m, x, ix: x.topk(2).values, (3, 4)),
    "topk_smallest": (lambda m, x, ix: m.topk(x, 2, dim=0, largest=False).values, (3, 4)),
    "t": (lambda m, x, ix: x.t() * 2, (3, 4)),
    "narrow": (lambda m, x, ix: x.narrow(1, 1, 2), (3, 4)),
    "split_sizes": (lambda m, x, ix: x.split([1, 3], dim=1)[1], (3, 4)),
    "split_size": (lambda m, x, ix: m.split(x, 3, dim=1)[1], (3, 4)),
    "chunk": (lambda m, x, ix: x.chunk(3, dim=1)[-1], (3, 5)),
    "unbind": (lambda m, x, ix: x.unbind(1)[2], (3, 4)),
    "view_as": (lambda m, x, ix: x.view_as(m.zeros(2, 6, dtype=m.float64)), (3, 4)),
    "expand_as": (lambda m, x, ix: x.expand_as(m.zeros(2, 3, 4, dtype=m.float64)), (3, 4)),
    "square": (lambda m, x, ix: x.square(), (3, 4)),
    "neg": (lambda m, x, ix: x.neg(), (3, 4)),
    "mm": (lambda m, x, ix: x.mm(x.t()), (3, 4)),
    "bmm": (lambda m, x, ix: m.bmm(x.reshape(2, 3, 2), x.reshape(2, 2, 3)), (3, 4)),
    "clamp": (lambda m, x, ix: m.clamp(x, min=-0.5, max=0.7), (3, 4)),
    "clamp_tensor_bounds": (lambda m, x, ix: m.clamp(x, min=x[:1].abs() * -0.5, max=x[1:2] + 0.3), (3, 4)),
    "clamp_tensor_max": (lambda m, x, ix: x.clamp(max=x[:, :1] * 0.5), (3, 4)),
    "contiguous": (lambda m, x, ix: x.t().contiguous(), (3, 4)),
    "log1p": (lambda m, x, ix: x.abs().log1p(), (3, 4)),
    "sin_cos": (lambda m, x, ix: x.sin() * m.cos(x), (3, 4)),
    "expm1": (lambda m, x, ix: m.expm1(x), (3, 4)),
    "rsqrt": (lambda m, x, ix: (x.abs() + 0.5).rsqrt(), (3, 4)),
    "reciprocal": (lambda m, x, ix: m.reciprocal(x.abs() + 0.5), (3, 4)),
    "flip": (lambda m, x, ix: m.flip(x, (0, 1)), (3, 4)),
    "roll": (lambda m, x, ix: m.roll(x, (1, -2), (0, 1)), (3, 4)),
    "roll_flat": (lambda m, x, ix: x.roll(5), (3, 4)),
    "repeat": (lambda m, x, ix: x.repeat(2, 1, 3), (3, 4)),
    "unflatten": (lambda m, x, ix: x.unflatten(1, (2, 2)), (3, 4)),
    "tril": (lambda m, x, ix: m.tril(x, -1), (3, 4)),
    "triu": (lambda m, x, ix: x.triu(1), (3, 4)),
    "outer": (lambda m, x, ix: m.outer(x[0], x[1]), (3, 4)),
    "silu": (lambda m, x, ix: m.nn.SiLU()(x), (3, 4)),
    "mish": (lambda m, x, ix: m.nn.Mish()(x), (3, 4)),
    "elu": (lambda m, x, ix: m.nn.ELU(alpha=0.7)(x * 3), (3, 4)),
    "hardtanh": (lambda m, x, ix: m.nn.Hardtanh(-0.5, 0.8)(x), (3, 4)),
    "floor_ceil_round": (lambda m, x, ix: x.floor() * x + m.ceil(x * 2) * x + (x * 3).round() * x, (3, 4)),
    # writing ops: gradients reach both the input and the source
    "scatter": (lambda m, x, ix: m.scatter(x, 1, ix([[0, 2], [1, 3], [3, 0]]), x[:, 1:3] * 2), (3, 4)),
    "scatter_value": (lambda m, x, ix: x.scatter(0, ix([[0, 2, 1, 0]]), 2.5), (3, 4)),
    "scatter_add_repeats": (lambda m, x, ix: m.scatter_add(x, 1, ix([[0, 0, 2], [1, 1, 1], [3, 0, 3]]),
                                                           x[:, :3] * x[:, 1:]), (3, 4)),
    "scatter_add_dim0": (lambda m, x, ix: x.scatter_add(0, ix([[2, 2, 0, 1], [2, 0, 0, 1]]), x[:2] ** 2), (3, 4)),
    "index_add_repeats": (lambda m, x, ix: m.index_add(x, 1, ix([0, 2, 0, 0, 3]), m.cat([x, x[:, :1]], 1) * 3,
                                                       alpha=-1.5), (3, 4)),
    "index_add_dim0": (lambda m, x, ix: x.index_add(0, ix([2, 2]), x[:2] * x[1:]), (3, 4)),
    "index_fill": (lambda m, x, ix: x.index_fill(1, ix([0, 2]), -1.0), (3, 4)),
    "masked_scatter": (lambda m, x, ix: x.masked_scatter(x > 0, x * 2 + 1), (3, 4)),
    "prod": (lambda m, x, ix: x.prod(), (3, 4)),
    "prod_dim": (lambda m, x, ix: m.prod(x, 1, keepdim=True), (3, 4)),
    "prod_dim0": (lambda m, x, ix: x.prod(dim=0), (3, 4)),
    "cumprod": (lambda m, x, ix: x.cumprod(1), (3, 4)),
    "cumprod_dim0": (lambda m, x, ix: m.cumprod(x, dim=0), (3, 4)),
    "median": (lambda m, x, ix: x.median(), (3, 4)),  # of an even count: the lower middle one
    "median_dim": (lambda m, x, ix: m.median(x, 1).values, (3, 4)),
    "median_dim_odd": (lambda m, x, ix: x.median(0, keepdim=True).values, (3, 4)),
    "einsum_mm": (lambda m, x, ix: m.einsum("ij,kj->ik", x, x * 2), (3, 4)),
    "einsum_ellipsis": (lambda m, x, ix: m.einsum("...ij,...jk", x.reshape(2, 3, 2), x[:2, :2]), (3, 4)),
    "einsum_scalar": (lambda m, x, ix: m.einsum("ij,ij->", x, x.exp()), (3, 4)),
    "einsum_diagonal": (lambda m, x, ix: m.einsum("ii->i", x[:, :3]) * m.einsum("ii", x[:, 1:]), (3, 4)),
    "einsum_list_three": (lambda m, x, ix: m.einsum("ij,jk,kl->il", [x, x.t(), x]), (3, 4)),
    "einsum_broadcast": (lambda m, x, ix: m.einsum("bi,bi->b", x[:1], x), (3, 4)),
    "einsum_summed_alone": (lambda m, x, ix: m.einsum("ij,k->i", x, x[0] ** 2), (3, 4)),
    "einsum_outer_sum": (lambda m, x, ix: m.einsum("...i->i", x.reshape(3, 2, 2)), (3, 4)),
    "diff": (lambda m, x, ix: m.diff(x, n=2, dim=1), (3, 4)),
    "diff_prepend_append": (lambda m, x, ix: x.diff(dim=0, prepend=x[:1] * 2, append=x[-1:] ** 2), (3, 4)),
    "fmod_scalar": (lambda m, x, ix: m.fmod(x * 3, 0.7), (3, 4)),
    "fmod_tensor": (lambda m, x, ix: (x * 3).fmod(x[:1].abs() + 1.5), (3, 4)),
    "remainder_tensor": (lambda m, x, ix: m.remainder(x * 3, x[:1].abs() + 1.5), (3, 4)),
    "remainder_operator": (lambda m, x, ix: (x * 3) % 0.7, (3, 4)),
    "lerp_tensor_weight": (lambda m, x, ix: m.lerp(x, x[:1] * 2, x[1:2].sigmoid()), (3, 4)),
    "lerp_scalar_weight": (lambda m, x, ix: x.lerp(x.flip(0), 0.3), (3, 4)),
    "trunc": (lambda m, x, ix: m.trunc(x * 3) + x, (3, 4)),
    "addmm": (lambda m, x, ix: m.addmm(x[0, :3], x[:, :3], x.t()[:3], beta=0.5, alpha=2.0), (3, 4)),
    "addmm_method": (lambda m, x, ix: x[:, :3].addmm(x[:, :2], x[:2, :3]), (3, 4)),
}



@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_in_value_and_gradient(backend, name):
    fn, shape = CASES[name]
    ours, theirs = _pair(backend, shape)
    ix = lambda v: idx(backend, v)  # noqa: E731
    out = fn(bg, ours, ix)
    assert out.dtype == np.float64
    assert bg.gradcheck(lambda t: fn(bg, t, ix), [x64(backend, ours.numpy())])
    if torch is None:
        return
    ref = fn(torch, theirs, torch.tensor)
    assert out.shape == tuple(ref.shape)
    _same(out, ref)
    w = np.random.default_rng(1).standard_normal(tuple(ref.shape))
    (out * x64(backend, w, False)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    _same(ours.grad, theirs.grad)


@needs_torch
def test_norm_of_zeros_has_gradient_zero_as_in_torch(backend):
    z = bg.zeros(3, dtype=bg.float64, device=backend, requires_grad=True)
    z.norm().backward()
    tz = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    tz.norm().backward()
    _same(z.grad, tz.grad)


@needs_torch
def test_sort_and_topk_return_indices_as_torch(backend):
    x, tx = _pair(backend, (4, 5), seed=3, grad=False)
    for ours, theirs in ((bg.sort(x, 1), torch.sort(tx, 1)), (x.sort(0, descending=True), tx.sort(0, True)),
                         (x.topk(3, dim=1), tx.topk(3, dim=1)), (bg.topk(x, 2, 0, False), torch.topk(tx, 2, 0, False))):
        values, indices = ours  # a named tuple, as torch.return_types
        assert ours.indices is indices and indices.dtype == np.int64
        np.testing.assert_array_equal(indices.numpy(), theirs.indices.numpy())
        _same(values, theirs.values)
    with pytest.raises(RuntimeError, match=r"topk: k=6 is out of range for dimension -1 of size 5"):
        x.topk(6)


@needs_torch
def test_logical_reductions_and_comparison_methods(backend):
    x, tx = _pair(backend, (3, 4), seed=4, grad=False)
    y, ty = x.clone(), tx.clone()
    assert bool((x == y).all()) and (tx == ty).all()
    for ours, theirs in (((x > 0).any(1), (tx > 0).any(1)), ((x > 0).all(0, keepdim=True), (tx > 0).all(0, True)),
                         (x.eq(y), tx.eq(ty)), (x.ne(0.1), tx.ne(0.1)), (x.lt(0), tx.lt(0)), (x.le(0), tx.le(0)),
                         (x.gt(0), tx.gt(0)), (x.ge(0), tx.ge(0)), (bg.any(x > 2), torch.any(tx > 2))):
        assert ours.dtype == np.bool_ and ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert bg.allclose(x, y + 1e-9) and not bg.allclose(x, y + 1e-3)
    assert bg.numel(x) == x.numel() == 12


@needs_torch
def test_split_and_chunk_follow_torch_not_numpy(backend):
    x, tx = _pair(backend, (7, 2), grad=False)
    for ours, theirs in ((x.split(3), tx.split(3)), (x.chunk(3), tx.chunk(3)), (x.chunk(4), tx.chunk(4)),
                         (bg.split(x, [2, 0, 5]), torch.split(tx, [2, 0, 5])), (x.unbind(1), tx.unbind(1))):
        assert [p.shape for p in ours] == [tuple(p.shape) for p in theirs]
        for p, q in zip(ours, theirs):
            _same(p, q)
    with pytest.raises(ValueError, match=r"sizes \[2, 2\] must be non-negative and add up to 7"):
        x.split([2, 2])


@needs_torch
def test_factories_follow_torch_signatures(backend):
    bg.manual_seed(0)
    r = bg.randint(3, 9, (4, 5), device=backend)
    assert r.shape == (4, 5) and r.dtype == np.int64 and 3 <= int(r.numpy().min()) and int(r.numpy().max()) < 9
    r2 = bg.randint(4, (1000,), device=backend)  # randint(high, size)
    assert set(np.unique(r2.numpy())) == {0, 1, 2, 3}
    p = bg.randperm(10, device=backend)
    assert sorted(p.numpy().tolist()) == list(range(10)) and p.dtype == np.int64
    for ours, theirs in ((bg.linspace(-1, 2, 7, device=backend), torch.linspace(-1, 2, 7)),
                         (bg.eye(3, 4, device=backend), torch.eye(3, 4)), (bg.eye(2, device=backend), torch.eye(2))):
        assert ours.dtype == np.float32 and ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    x = bg.ones(2, 3, dtype=bg.float64, device=backend)
    for t, fill in ((bg.full_like(x, 7), 7), (bg.zeros_like(x), 0), (x.new_zeros(2, 3), 0), (x.new_ones((2, 3)), 1),
                    (x.new_full((2, 3), 4.5), 4.5)):
        assert t.shape == (2, 3) and t.dtype == np.float64 and t.device == x.device
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), fill))
    for t in (bg.rand_like(x), bg.randn_like(x), bg.empty_like(x), x.new_empty(2, 3)):
        assert t.shape == (2, 3) and t.dtype == np.float64 and t.device == x.device
    assert x.new_tensor([1, 2]).dtype == np.float64
    with pytest.raises(ValueError, match=r"randint: high \(2\) must be larger than low \(5\)"):
        bg.randint(5, 2, (3,))


def test_as_tensor_shares_memory_where_torch_does():
    a = np.arange(4.0)
    t = bg.as_tensor(a)
    a[0] = 9.0
    assert t.numpy()[0] == 9.0 and bg.as_tensor(t) is t
    assert bg.as_tensor(t, dtype=bg.float32).dtype == np.float32
    assert bg.as_tensor([1, 2]).dtype == np.int64


@needs_torch
def test_dtype_names_and_conversion_methods(backend):
    assert (bg.long, bg.int, bg.bool, bg.float, bg.double, bg.half) == (
        np.int64, np.int32, np.bool_, np.float32, np.float64, np.float16)
    x = bg.tensor([1.5, -2.0, 0.0], device=backend)
    assert (x.int().dtype, x.long().dtype, x.half().dtype, x.bool().dtype) == (np.int32, np.int64, np.float16, np.bool_)
    np.testing.assert_array_equal(x.int().numpy(), torch.tensor([1.5, -2.0, 0.0]).int().numpy())
    np.testing.assert_array_equal(x.bool().numpy(), [True, True, False])
    assert x.type() == "backprop_gpu.float32" and x.type(bg.float64).dtype == np.float64


def test_contiguous_copies_only_when_the_layout_is_not_row_major(backend):
    x = bg.tensor(np.arange(6.0).reshape(2, 3), device=backend)
    assert x.is_contiguous() and x.contiguous() is x
    y = x.t()
    assert not y.is_contiguous()
    c = y.contiguous()
    assert c.is_contiguous() and c is not y
    np.testing.assert_array_equal(c.numpy(), y.numpy())


def test_clamp_in_place(backend):
    x = bg.tensor([-2.0, 0.5, 3.0], device=backend)
    assert x.clamp_(min=-1, max=1) is x
    np.testing.assert_array_equal(x.numpy(), [-1.0, 0.5, 1.0])
    w = bg.tensor([1.0], device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="clamp_: in-place change of a leaf tensor that requires grad"):
        w.clamp_(min=0)


def test_bad_arguments_name_what_is_wrong(backend):
    x = bg.zeros(3, 4, device=backend)
    with pytest.raises(RuntimeError, match=r"t\(\) expects a tensor with at most 2 dimensions, got shape \(2, 2, 3\)"):
        bg.zeros(2, 2, 3).t()
    with pytest.raises(RuntimeError, match=r"gather: index of shape \(3,\) must have as many dimensions"):
        x.gather(1, idx(backend, [0, 1, 2]))
    with pytest.raises(TypeError, match="gather: the index must be an integer tensor, got dtype float32"):
        x.gather(1, bg.zeros(3, 1, device=backend))
    with pytest.raises(TypeError, match="masked_fill: mask must be a bool tensor"):
        x.masked_fill(bg.zeros(3, 4, device=backend), 1.0)
    with pytest.raises(RuntimeError, match=r"mm: expected two 2-D tensors, got shapes \(3, 4\) and \(4,\)"):
        x.mm(bg.zeros(4, device=backend))
    with pytest.raises(IndexError, match="narrow: start 3 and length 2 are out of range for dimension 1 of size 4"):
        x.narrow(1, 3, 2)
    with pytest.raises(TypeError, match=r"cumsum\(\) missing the dimension"):
        x.cumsum()


@needs_torch
def test_equal_is_one_bool_as_torch_equal_and_eq_is_elementwise(backend):
    x, tx = _pair(backend, (2, 3), grad=False)
    for ours, theirs in ((bg.equal(x, x.clone()), torch.equal(tx, tx.clone())), (x.equal(x * 2), tx.equal(tx * 2)),
                         (bg.equal(x, x[:1]), torch.equal(tx, tx[:1]))):
        assert type(ours) is bool and ours == theirs
    e = bg.eq(x, x * 1)
    assert e.dtype == np.bool_ and e.shape == (2, 3) and bool(e.all())


@needs_torch
def test_argsort_isclose_nonzero_match_torch(backend):
    x, tx = _pair(backend, (3, 4), seed=6, grad=False)
    np.testing.assert_array_equal(bg.argsort(x, 0, descending=True).numpy(), torch.argsort(tx, 0, True).numpy())
    np.testing.assert_array_equal(x.argsort().numpy(), tx.argsort().numpy())
    y, ty = x + 1e-9, tx + 1e-9
    np.testing.assert_array_equal(bg.isclose(x, y).numpy(), torch.isclose(tx, ty).numpy())
    m, tm = x > 0.3, tx > 0.3
    np.testing.assert_array_equal(bg.nonzero(m).numpy(), torch.nonzero(tm).numpy())
    for p, q in zip(m.nonzero(as_tuple=True), tm.nonzero(as_tuple=True)):
        assert p.dtype == np.int64
        np.testing.assert_array_equal(p.numpy(), q.numpy())


@needs_torch
def test_embedding_padding_idx_and_one_hot_as_torch(backend):
    w = np.random.default_rng(3).standard_normal((5, 2))
    ours = bg.nn.Embedding(5, 2, padding_idx=-1).to(backend).double()
    theirs = torch.nn.Embedding(5, 2, padding_idx=-1).double()
    assert ours.padding_idx == theirs.padding_idx == 4 and not ours.weight.numpy()[4].any()
    with bg.no_grad():
        ours.weight.copy_(bg.tensor(w))
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
    idx = [[4, 1, 4], [0, 1, 2]]
    out, ref = ours(idx_t := bg.tensor(np.array(idx), device=backend)), theirs(torch.tensor(idx))
    _same(out, ref)  # the padding row's values come out, as in torch
    (out * out).sum().backward()
    (ref * ref).sum().backward()
    _same(ours.weight.grad, theirs.weight.grad)
    assert not ours.weight.grad.numpy()[4].any()
    oh = bg.nn.functional.one_hot(idx_t)
    assert oh.dtype == np.int64
    np.testing.assert_array_equal(oh.numpy(), torch.nn.functional.one_hot(torch.tensor(idx)).numpy())


def test_default_dtype_as_torch(backend):
    assert bg.get_default_dtype() == np.float32
    try:
        bg.set_default_dtype(bg.float64)
        assert bg.get_default_dtype() == np.float64
        for t in (bg.zeros(2, device=backend), bg.rand(2, device=backend), bg.tensor([1.5], device=backend),
                  bg.linspace(0, 1, 3, device=backend), bg.arange(0.5, 2, device=backend),
                  bg.tensor([1, 2], device=backend) * 1.5, bg.tensor([3], device=backend) / bg.tensor([2], device=backend)):
            assert t.dtype == np.float64, t
        assert bg.nn.Linear(2, 3).weight.dtype == np.float64
        with pytest.raises(TypeError, match="set_default_dtype takes a floating dtype .* got int64"):
            bg.set_default_dtype(bg.long)
    finally:
        bg.set_default_dtype(bg.float32)
    assert bg.tensor([1.5]).dtype == np.float32
