"""The edge cases of scatter/scatter_add/index_add (and their in-place forms), prod and cumprod,
median and einsum that the table in test_torch_methods.py does not reach: repeated indices, zeros
in products, even-length and NaN medians, einsum's ellipsis, broadcasting and implicit output,
torch's errors; against torch where installed and finite differences in float64."""
import numpy as np
import pytest

import backprop_gpu as bg
from helpers import idx, x64

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install torch==2.13.0)")


def _same(ours, theirs, **kw):
    theirs = theirs.detach().numpy() if torch is not None and isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(ours.numpy(), theirs, **{"rtol": 1e-12, "atol": 1e-12, **kw})


def _grads_match_torch(fn, arrays, backend, ints=()):
    """``fn(m, *tensors)`` for m in (bg, torch): the same values and the same gradients of a random
    weighting of the output; also gradcheck of ours in float64."""
    ours = [x64(backend, a) for a in arrays]
    out = fn(bg, *ours)
    assert bg.gradcheck(lambda *t: fn(bg, *t), [x64(backend, a) for a in arrays])
    if torch is None:
        return
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    ref = fn(torch, *theirs)
    assert out.shape == tuple(ref.shape)
    _same(out, ref)
    w = np.random.default_rng(7).standard_normal(tuple(ref.shape))
    (out * x64(backend, w, False)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        _same(a.grad, b.grad.numpy(), rtol=1e-10)


# -- scatter family ----------------------------------------------------------------------------------
def test_repeated_indices_accumulate_in_scatter_add_and_index_add(backend):
    rng = np.random.default_rng(0)
    x, src = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    index = rng.integers(0, 2, (6, 3))  # rows 0 and 1 only: every target is hit several times
    want = x.copy()
    np.add.at(want, (index, np.arange(3)), src)  # NumPy's unbuffered add as the reference
    got = bg.scatter_add(x64(backend, x), 0, idx(backend, index), x64(backend, src))
    _same(got, want)
    rows = np.array([3, 3, 3, 0, 3, 0])
    want = x.copy()
    np.add.at(want, rows, 2.0 * src)
    _same(bg.index_add(x64(backend, x), 0, idx(backend, rows), x64(backend, src), alpha=2.0), want)
    # a long index along a later dim: the compiled row scatter on numba, through a transposed layout
    big = rng.integers(0, 5, 400)
    s = rng.standard_normal((2, 400, 3))
    want = np.zeros((2, 5, 3))
    np.add.at(want, (slice(None), big), s)
    _same(bg.index_add(x64(backend, np.zeros((2, 5, 3))), 1, idx(backend, big), x64(backend, s)), want, rtol=1e-11)


@needs_torch
def test_scatter_family_matches_torch_with_repeats(backend):
    rng = np.random.default_rng(1)
    x, src = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    index = np.array([[0, 0, 4, 4], [1, 1, 1, 1], [2, 3, 2, 3]])
    _grads_match_torch(lambda m, a, s: m.scatter_add(a, 1, m.tensor(index) if m is torch else idx(backend, index),
                                                     s), [x, src], backend)
    rows = np.array([4, 0, 4, 4])
    _grads_match_torch(lambda m, a, s: m.index_add(a, 1, m.tensor(rows) if m is torch else idx(backend, rows), s,
                                                   alpha=3), [x, src], backend)
    # scatter without repeats (with repeats, which write wins is unspecified)
    perm = np.array([[4, 0, 2, 1], [3, 2, 1, 0], [0, 1, 2, 3]])
    _grads_match_torch(lambda m, a, s: m.scatter(a, 1, m.tensor(perm) if m is torch else idx(backend, perm), s),
                       [x, src], backend)


def test_scatter_gradient_is_zero_where_overwritten_and_the_gather_for_src(backend):
    x, s = x64(backend, np.ones((2, 3))), x64(backend, [[10.0, 20.0]])
    out = bg.scatter(x, 1, idx(backend, [[2, 0]]), s)
    _same(out, [[20.0, 1.0, 10.0], [1.0, 1.0, 1.0]])
    g = np.arange(6.0).reshape(2, 3)
    out.backward(x64(backend, g, False))
    _same(x.grad, [[0.0, 1.0, 0.0], [3.0, 4.0, 5.0]])
    _same(s.grad, [[2.0, 0.0]])


def test_scatter_reads_only_the_index_corner_of_a_larger_src(backend):
    x, s = x64(backend, np.zeros((2, 3))), x64(backend, np.arange(8.0).reshape(2, 4))
    out = bg.scatter_add(x, 1, idx(backend, [[1, 1]]), s)
    _same(out, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out.sum().backward()
    _same(s.grad, [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


@needs_torch
def test_in_place_forms_match_torch_and_bump_the_version(backend):
    rng = np.random.default_rng(2)
    a, src = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    index = np.array([[0, 0, 1, 3], [2, 2, 2, 2], [1, 0, 3, 3]])
    ours, theirs = x64(backend, a, False), torch.tensor(a)
    for fn in (lambda m, t, ix, s: t.scatter_add_(1, ix(index), s),
               lambda m, t, ix, s: t.index_add_(0, ix([2, 0, 2]), s, alpha=-2.0),
               lambda m, t, ix, s: t.scatter_(0, ix([[2, 0, 1, 1]]), s[:1]),
               lambda m, t, ix, s: t.scatter_(1, ix([[3], [0], [1]]), 4.5),
               lambda m, t, ix, s: t.scatter_(1, ix([[3], [0], [1]]), value=-4.5),
               lambda m, t, ix, s: t.index_fill_(1, ix([1, 3]), 0.25)):
        before = ours._version[0]
        r = fn(bg, ours, lambda v: idx(backend, v), x64(backend, src, False))
        fn(torch, theirs, torch.tensor, torch.tensor(src))
        assert r is ours and ours._version[0] == before + 1
        _same(ours, theirs)
    # an in-place change to a tensor that backward still needs is caught
    w = x64(backend, a)
    y = x64(backend, src, False)
    loss = (w * y).sum()
    y.scatter_add_(1, idx(backend, index), x64(backend, src, False))
    with pytest.raises(RuntimeError, match="modified"):
        loss.backward()


def test_an_index_changed_after_forward_is_caught_at_backward(backend):
    x = x64(backend, np.zeros((3, 2)))
    src = x64(backend, np.ones((2, 2)))
    index = idx(backend, [2, 0])
    out = x.index_add(0, index, src)
    index[0] = 1  # would silently move src's gradient
    with pytest.raises(RuntimeError, match="modified"):
        out.sum().backward()


def test_in_place_forms_follow_the_tensor_rule_for_grad(backend):
    w = x64(backend, np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="scatter_add_: in-place change of a leaf tensor that requires grad"):
        w.scatter_add_(1, idx(backend, [[0]]), x64(backend, [[1.0]], False))
    with pytest.raises(RuntimeError, match="index_add_: in-place change of a leaf tensor that requires grad"):
        w.index_add_(0, idx(backend, [0]), x64(backend, np.ones((1, 3)), False))
    with bg.no_grad():  # as for add_: allowed where nothing records
        w.index_add_(0, idx(backend, [1, 1]), x64(backend, np.ones((2, 3))))
    _same(w, [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])


def test_in_place_forms_on_the_graph_match_torch(backend):
    """On a non-leaf, or with a grad-requiring operand, the in-place forms are recorded, as in torch."""
    pytest.importorskip("torch")
    a, src = np.arange(6.0).reshape(2, 3), np.arange(1.0, 7.0).reshape(2, 3)
    grads = []
    for m, ix, mk in ((bg, lambda v: idx(backend, v), lambda v: x64(backend, v)),
                      (torch, torch.tensor, lambda v: torch.tensor(v, requires_grad=True))):
        x, s = mk(a), mk(src)
        y = x * 1
        y.scatter_(1, ix([[2, 0], [1, 1]]), s[:, :2])
        y.scatter_add_(0, ix([[1, 0, 1]]), s[:1] * 2)
        y.index_add_(1, ix([0, 0]), s[:, 1:] * 3, alpha=0.5)
        y.index_fill_(0, ix([1]), 0.25)
        buf = m.zeros_like(x).detach()  # a constant that a grad-requiring operand puts on the graph
        buf.scatter_(0, ix([[1, 0, 1]]), s[:1])
        ((y * y).sum() + (buf * x).sum()).backward()
        grads.append((x.grad, s.grad))
    for ours, theirs in zip(*grads):
        _same(ours, theirs)


def test_scatter_errors_name_the_shapes(backend):
    x = bg.zeros(3, 4, device=backend)
    with pytest.raises(RuntimeError, match=r"scatter: index of shape \(2,\) must have as many dimensions as the "
                                           r"input of shape \(3, 4\)"):
        x.scatter(1, idx(backend, [0, 1]), 1.0)
    with pytest.raises(RuntimeError, match=r"scatter_add: index of shape \(1, 3\) must be no larger than src of "
                                           r"shape \(1, 2\)"):
        x.scatter_add(1, idx(backend, [[0, 1, 2]]), bg.ones(1, 2, device=backend))
    with pytest.raises(RuntimeError, match=r"scatter: index of shape \(4, 1\) must be no larger than the input of "
                                           r"shape \(3, 4\) apart from dimension 1"):
        x.scatter(1, idx(backend, np.zeros((4, 1))), 1.0)
    with pytest.raises(RuntimeError, match=r"scatter_add: expected self.dtype to be equal to src.dtype, got "
                                           r"float32 and float64"):
        x.scatter_add(1, idx(backend, [[0]]), x64(backend, [[1.0]], False))
    with pytest.raises(TypeError, match="scatter: the index must be an integer tensor, got dtype float32"):
        x.scatter(1, bg.zeros(1, 1, device=backend), 1.0)
    with pytest.raises(IndexError, match="dimension 2 is out of range"):
        x.scatter(2, idx(backend, [[0]]), 1.0)
    with pytest.raises(TypeError, match=r"scatter\(\) takes exactly one of src and value"):
        x.scatter(1, idx(backend, [[0]]))
    with pytest.raises(NotImplementedError, match="reduce='multiply'"):
        x.scatter(1, idx(backend, [[0]]), 2.0, reduce="multiply")
    with pytest.raises(RuntimeError, match=r"index_add: number of indices \(2\) should be equal to "
                                           r"source.size\(1\) \(3\)"):
        x.index_add(1, idx(backend, [0, 1]), bg.ones(3, 3, device=backend))
    with pytest.raises(RuntimeError, match=r"index_add: source of shape \(2, 2\) must match the input of shape "
                                           r"\(3, 4\) apart from dimension 1"):
        x.index_add(1, idx(backend, [0, 1]), bg.ones(2, 2, device=backend))
    with pytest.raises(IndexError, match=r"index_add: index must be a vector \(0- or 1-D\), got shape \(1, 2\)"):
        x.index_add(1, idx(backend, [[0, 1]]), bg.ones(3, 2, device=backend))
    with pytest.raises(RuntimeError, match=r"index_add: self \(float32\) and source \(float64\) must have the "
                                           "same dtype"):
        x.index_add(1, idx(backend, [0]), x64(backend, np.ones((3, 1)), False))


def test_out_of_range_indices_are_torch_errors_on_the_host(backend):
    if not backend.is_host:
        pytest.skip("on a GPU the range is not checked: that would cost a device sync")
    x = bg.zeros(3, 4, device=backend)
    for call in (lambda: x.scatter(1, idx(backend, [[4]]), 1.0),
                 lambda: x.scatter_add(1, idx(backend, [[-1]]), bg.ones(1, 1, device=backend)),
                 lambda: x.index_add(1, idx(backend, [4]), bg.ones(3, 1, device=backend)),
                 lambda: x.index_fill(1, idx(backend, [-1]), 0.0)):
        with pytest.raises(RuntimeError, match=r"index (4|-1) is out of bounds for dimension 1 with size 4"):
            call()
    assert not x.numpy().any()


def test_scatter_and_index_add_of_0d_tensors(backend):
    x = x64(backend, 2.0)
    out = bg.scatter(x, 0, idx(backend, 0), x64(backend, 5.0, False))
    assert out.shape == () and out.item() == 5.0
    out = x.index_add(0, idx(backend, [0]), x64(backend, [3.0], False).reshape(()), alpha=2)
    assert out.shape == () and out.item() == 8.0
    out.backward()
    assert x.grad.item() == 1.0


@needs_torch
def test_masked_scatter_and_index_fill_match_torch(backend):
    rng = np.random.default_rng(3)
    a, s = rng.standard_normal((3, 4)), rng.standard_normal(10)
    mask = np.array([True, False, True, True])  # broadcast over the rows: 9 true, source has one spare
    _grads_match_torch(lambda m, x, src: x.masked_scatter(m.tensor(mask) if m is torch else bg.tensor(
        mask, device=backend), src), [a, s], backend)
    v = np.array(1.5)
    _grads_match_torch(lambda m, x, val: x.index_fill(0, m.tensor([2, 0]) if m is torch else idx(backend, [2, 0]),
                                                      val), [a, v], backend)
    with pytest.raises(RuntimeError, match=r"masked_scatter: the mask has 9 true elements but source of shape "
                                           r"\(8,\) has only 8"):
        x64(backend, a).masked_scatter(bg.tensor(mask, device=backend), x64(backend, np.ones(8)))


# -- prod and cumprod --------------------------------------------------------------------------------
ZEROS = {
    "one zero": [[1.5, 0.0, -2.0, 0.5], [0.7, 1.2, -0.4, 2.0]],
    "two zeros": [[0.0, 1.5, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]],
    "zero first and last": [[0.0, 1.5, -1.0, 0.0], [2.0, 0.0, 1.0, 0.0]],
}


@pytest.mark.parametrize("case", list(ZEROS))
def test_prod_and_cumprod_gradients_with_zeros(backend, case):
    a = np.array(ZEROS[case])
    for fn in (lambda m, x: m.prod(x), lambda m, x: m.prod(x, 1), lambda m, x: x.prod(0, keepdim=True),
               lambda m, x: m.cumprod(x, 1), lambda m, x: x.cumprod(0)):
        _grads_match_torch(fn, [a], backend)


def test_prod_of_one_zero_has_the_product_of_the_others_as_gradient(backend):
    x = x64(backend, [2.0, 0.0, 3.0, -1.0])
    x.prod().backward()
    _same(x.grad, [0.0, -6.0, 0.0, 0.0])
    y = x64(backend, [2.0, 0.0, 3.0, 0.0])
    y.prod().backward()
    _same(y.grad, [0.0, 0.0, 0.0, 0.0])


@needs_torch
def test_prod_dtypes_and_edge_shapes_as_torch(backend):
    ints = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    for ours, theirs in ((bg.prod(bg.tensor(ints, device=backend)), torch.prod(torch.tensor(ints))),
                         (bg.tensor(ints, device=backend).prod(1), torch.tensor(ints).prod(1)),
                         (bg.tensor([True, False], device=backend).prod(), torch.tensor([True, False]).prod()),
                         (bg.cumprod(bg.tensor(ints, device=backend), 1), torch.cumprod(torch.tensor(ints), 1)),
                         (bg.prod(bg.tensor(ints, device=backend), 0, dtype=bg.float64),
                          torch.prod(torch.tensor(ints), 0, dtype=torch.float64)),
                         (bg.zeros(0, 3, device=backend).prod(0), torch.zeros(0, 3).prod(0))):
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", "")) and ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(TypeError, match=r"prod\(\): dim must be one int, got \(0, 1\)"):
        bg.ones(2, 2, device=backend).prod((0, 1))
    with pytest.raises(TypeError, match=r"cumprod\(\) missing the dimension"):
        bg.ones(2, device=backend).cumprod()


# -- median ------------------------------------------------------------------------------------------
@needs_torch
def test_median_is_torchs_lower_median_with_its_indices(backend):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4, 6))  # even lengths along both dims and overall
    x, t = x64(backend, a, False), torch.tensor(a)
    _same(bg.median(x), torch.median(t))
    assert float(bg.median(x)) == np.sort(a.ravel())[11]  # the lower of the two middle values
    for d in (0, 1, -1):
        for keep in (False, True):
            ours, theirs = x.median(d, keepdim=keep), t.median(d, keepdim=keep)
            values, indices = ours
            assert ours.indices is indices and indices.dtype == np.int64
            np.testing.assert_array_equal(indices.numpy(), theirs.indices.numpy())
            _same(values, theirs.values)


@needs_torch
def test_median_propagates_nan_as_torch(backend):
    a = np.array([[1.0, np.nan, 3.0, np.nan], [4.0, 2.0, 3.0, 1.0]])
    ours, theirs = bg.median(x64(backend, a, False), 1), torch.median(torch.tensor(a), 1)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
    assert np.isnan(bg.median(x64(backend, a, False)).item())


def test_median_gradient_goes_to_the_selected_element(backend):
    x = x64(backend, [[3.0, 1.0, 2.0, 5.0], [0.5, 0.2, 0.9, 0.1]])
    bg.median(x).backward()
    want = np.zeros((2, 4))
    want[1, 2] = 1.0  # 0.9 is the 4th smallest of 8
    _same(x.grad, want)
    x.grad = None
    x.median(1).values.sum().backward()
    _same(x.grad, [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # 2.0 and 0.2: the lower middle ones


def test_median_of_empty_and_0d_as_torch(backend):
    assert np.isnan(bg.median(bg.zeros(0, device=backend)).item())
    with pytest.raises(IndexError, match=r"median\(\): expected reduction dim 1 to have non-zero size"):
        bg.median(bg.zeros(2, 0, device=backend), 1)
    v, i = bg.median(x64(backend, 4.0, False), 0)
    assert v.item() == 4.0 and i.item() == 0


# -- einsum ------------------------------------------------------------------------------------------
EINSUM = {
    "ellipsis_broadcast": ("...ij,...jk->...ik", [(2, 1, 3, 4), (3, 4, 2)]),
    "ellipsis_middle": ("i...j,j->...i", [(2, 3, 1, 4), (4,)]),
    "implicit_upper_first": ("bA,Ab", [(3, 2), (2, 3)]),  # implicit: no free letter, a scalar
    "implicit_sorted": ("zb,ba", [(2, 3), (3, 4)]),  # -> "az"
    "scalar_output": ("i,i->", [(5,), (5,)]),
    "batched_trace": ("bii->b", [(3, 4, 4)]),
    "diagonal_with_others": ("iji,j->i", [(3, 2, 3), (2,)]),
    "broadcast_size_1": ("ij,ij->i", [(1, 4), (3, 4)]),
    "summed_only_here": ("ijk,j->j", [(2, 3, 4), (3,)]),
    "four_operands": ("ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 2), (2, 3)]),
    "transpose_only": ("ij->ji", [(2, 3)]),
}


@pytest.mark.parametrize("name", list(EINSUM))
def test_einsum_matches_torch_and_finite_differences(backend, name):
    eq, shapes = EINSUM[name]
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s) for s in shapes]
    _grads_match_torch(lambda m, *xs: m.einsum(eq, *xs), arrays, backend)
    np.testing.assert_allclose(bg.einsum(eq, [x64(backend, a, False) for a in arrays]).numpy(),
                               np.einsum(eq, *arrays), rtol=1e-12)


def test_einsum_errors_as_torch(backend):
    a, b = bg.ones(2, 3, device=backend), bg.ones(4, 5, device=backend)
    for call, msg in ((lambda: bg.einsum("ij,jk", a, b), "subscript j has size 4 for operand 1 which does not "
                                                         "broadcast with previously seen size 3"),
                      (lambda: bg.einsum("ij->ii", a), "output subscript i appears more than once"),
                      (lambda: bg.einsum("ij->k", a), "output subscript k does not appear in the equation"),
                      (lambda: bg.einsum("ijk", a), r"the number of subscripts in the equation \(3\) does not match "
                                                    r"the number of dimensions \(2\) for operand 0"),
                      (lambda: bg.einsum("ij,jk", a), "fewer operands were provided"),
                      (lambda: bg.einsum("i", a, b), "more operands were provided"),
                      (lambda: bg.einsum("i1", a), "invalid subscript given at index 1"),
                      (lambda: bg.einsum("i..j", a), "invalid equation")):
        with pytest.raises(RuntimeError, match=msg):
            call()
    with pytest.raises(RuntimeError, match=r"subscript in sublist format must be an int in \[0, 52\) or Ellipsis"):
        bg.einsum(a, [0, 60])


@needs_torch
def test_einsum_sublist_form_as_torch(backend):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))]
    _grads_match_torch(lambda m, a, b: m.einsum(a, [Ellipsis, 0, 1], b, [1, 2], [Ellipsis, 2, 0]), arrays, backend)
    _grads_match_torch(lambda m, a, b: m.einsum(a, [0, 1, 2], b, [2, 3]), arrays, backend)  # implicit output


def test_einsum_float32_keeps_float32(backend):
    a = bg.tensor(np.ones((2, 3), np.float32), device=backend, requires_grad=True)
    out = bg.einsum("ij,kj->ik", a, a)
    assert out.dtype == np.float32
    out.sum().backward()
    assert a.grad.dtype == np.float32
    _same(a.grad, np.full((2, 3), 4.0))


# -- the GPU rules, through the recording CuPy stand-in (simulated: NumPy underneath) ---------------
STAND_IN_OPS = {
    "scatter": lambda x, ix: x.scatter(1, ix([[2, 0], [1, 3], [0, 0]]), x[:, :2] * 2),
    "scatter_add": lambda x, ix: bg.scatter_add(x, 0, ix([[2, 2, 0, 1], [0, 0, 0, 1]]), x[:2] * 3),
    "index_add": lambda x, ix: x.index_add(1, ix([3, 3, 0]), x[:, :3], alpha=0.5),
    "index_fill": lambda x, ix: x.index_fill(1, ix([1]), 2.0),
    "masked_scatter": lambda x, ix: x.masked_scatter(x > 0, x * 2),
    "prod_zeros": lambda x, ix: bg.prod(x * (x > -0.3), 1) + x.prod(),
    "cumprod_zeros": lambda x, ix: (x * (x > -0.3)).cumprod(1),
    "median": lambda x, ix: x.median(1).values * x.median(),
    "einsum": lambda x, ix: bg.einsum("ij,kj,ii->ik", x, x, x[:, :3]),
    "diff": lambda x, ix: x.diff(dim=0, append=x[:1]),
    "clamp": lambda x, ix: bg.clamp(x, min=x[:1] * 0.5),
}


@pytest.mark.parametrize("name", list(STAND_IN_OPS))
def test_ops_make_no_sync_on_the_cupy_stand_in(monkeypatch, tmp_path_factory, name):
    import recording_cupy

    rec, cupy = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    a = np.random.default_rng(8).standard_normal((3, 4))
    results = []
    for device in (cupy, "numpy"):
        x = bg.tensor(a, device=device, requires_grad=True)
        index = {}
        for v in ([[2, 0], [1, 3], [0, 0]], [[2, 2, 0, 1], [0, 0, 0, 1]], [3, 3, 0], [1]):
            index[repr(v)] = idx(device, v)  # copied before counting: an index is data the step brings
        with rec.count() as c:
            out = STAND_IN_OPS[name](x, lambda v: index[repr(v)])
            out.backward(bg.ones_like(out))
        if device is cupy:
            assert c.syncs == 0, c.table(kinds=("sync",))
        results.append((out.numpy(), x.grad.numpy()))
    for ours, ref in zip(*results):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
