"""The array namespace's fused kernels on every backend, against the reference versions
written over xp (ArrayNamespace), and the fused ops built on them.

The numba backend compiles each kernel twice (serial, and parallel for large
arrays); both are checked, the parallel one by lowering the size threshold.
"""
import numpy as np
import pytest

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from backprop_gpu import nn
from backprop_gpu.array.kernels import numba_cpu as numba_kernels
from backprop_gpu.array.kernels.reference import Kernels
from backprop_gpu.array.namespace import ArrayNamespace


def reference(backend):
    """The reference kernels on ``backend``'s own arrays."""
    return ArrayNamespace(bg.get_backend(backend))


def compiled(backend, *names):
    """Skip unless ``backend`` compiles one of the kernels ``names``: comparing the reference
    with itself could not fail."""
    cls = type(bg.get_backend(backend).F)
    if all(getattr(cls, n) is getattr(Kernels, n) for n in names):
        pytest.skip(f"the {backend.name} backend runs the reference {', '.join(names)}")


@pytest.fixture(params=["serial", "parallel"])
def size_path(request, monkeypatch):
    """Run each numba kernel through its serial and its parallel compilation."""
    if request.param == "parallel":
        if "backend" in request.fixturenames and request.getfixturevalue("backend").name != "numba":
            pytest.skip("only the numba backend has a parallel compilation")
        monkeypatch.setattr(numba_kernels, "PARALLEL_MIN", 0)
    return request.param


def _arrays(backend, dtype, *shapes, seed=0):
    b = bg.get_backend(backend)
    rng = np.random.default_rng(seed)
    return [b.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4), (6,)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_relu_matches_reference(backend, size_path, dtype, shape, with_bias):
    compiled(backend, "bias_relu_")
    b = bg.get_backend(backend)
    y, bias = _arrays(backend, dtype, shape, shape[-1:])
    y_ref = y.copy()
    y[0] = y_ref[0] = np.nan  # NaN propagates, as NumPy's maximum
    bias = bias if with_bias else None
    out = b.F.bias_relu_(y, bias)
    ref = reference(backend).bias_relu_(y_ref, bias)
    assert out is y  # in place
    np.testing.assert_array_equal(b.to_host(out), b.to_host(ref))
    assert bool((b.to_host(out)[1:] >= 0).all())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_matches_reference(backend, size_path, dtype):
    compiled(backend, "relu_backward")
    b = bg.get_backend(backend)
    g, out = _arrays(backend, dtype, (9, 11), (9, 11))
    out = b.F.bias_relu_(out, None)
    res = b.F.relu_backward(g, out)
    np.testing.assert_array_equal(b.to_host(res), b.to_host(reference(backend).relu_backward(g, out)))
    assert res is not g and res.dtype == g.dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(9, 11), (2, 4, 5)])
def test_relu_backward_colsum_matches_reference(backend, dtype, shape):
    compiled(backend, "relu_backward_colsum")
    b = bg.get_backend(backend)
    g, out = _arrays(backend, dtype, shape, shape, seed=4)
    out = b.F.bias_relu_(out, None)
    gm_ref, cs_ref = reference(backend).relu_backward_colsum(g, out)
    gm, cs = b.F.relu_backward_colsum(g, out)
    np.testing.assert_array_equal(b.to_host(gm), b.to_host(gm_ref))
    np.testing.assert_allclose(b.to_host(cs), b.to_host(cs_ref), rtol=1e-6 if dtype == "float32" else 1e-14)
    assert cs.shape == (shape[-1],)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_colsum_into_matches_reference(backend, dtype):
    compiled(backend, "relu_backward_colsum_into")
    b = bg.get_backend(backend)
    g, out, slot = _arrays(backend, dtype, (9, 11), (9, 11), (11,), seed=5)
    out = b.F.bias_relu_(out, None)
    gm_ref, cs_ref = reference(backend).relu_backward_colsum(g, out)
    gm, cs = b.F.relu_backward_colsum_into(g, out, slot)
    assert cs is slot
    np.testing.assert_array_equal(b.to_host(gm), b.to_host(gm_ref))
    np.testing.assert_allclose(b.to_host(cs), b.to_host(cs_ref), rtol=1e-6 if dtype == "float32" else 1e-14)


# libm's (or CUDA's) exp and log against NumPy's, and another summation order: a few ulps
CE_RTOL = {"float32": 2e-6, "float64": 1e-13}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_kernels_match_reference(backend, dtype, reduction, ls):
    compiled(backend, "cross_entropy_forward", "cross_entropy_backward")
    b, ref = bg.get_backend(backend), reference(backend)
    rng = np.random.default_rng(6)
    x = b.asarray((rng.standard_normal((12, 7)) * 3).astype(dtype))
    tt = rng.integers(0, 7, 12)
    tt[[2, 5]] = 3
    t = b.asarray(tt)
    stats, ref_stats = [(b.arrays.empty((), dtype), b.arrays.empty((), np.bool_)) for _ in range(2)]
    loss = b.F.cross_entropy_forward(x, t, 3, ls, reduction, stats[0], stats)
    want = ref.cross_entropy_forward(x, t, 3, ls, reduction, ref_stats[0], ref_stats)
    tol = dict(rtol=CE_RTOL[dtype], atol=CE_RTOL[dtype] * 10)
    np.testing.assert_allclose(b.to_host(loss), b.to_host(want), **tol)
    counted = int((tt != 3).sum())
    assert b.to_host(stats[0]) == b.to_host(ref_stats[0]) == counted and not b.to_host(stats[1])
    g = b.asarray(rng.standard_normal(12 if reduction == "none" else ()).astype(dtype))
    for count in (stats[0], counted):  # the forward's own count on the device, or a host target's
        gx = b.F.cross_entropy_backward(g, x, t, 3, ls, reduction, count)
        want = ref.cross_entropy_backward(g, x, t, 3, ls, reduction, ref_stats[0] if count is stats[0] else counted)
        np.testing.assert_allclose(b.to_host(gx), b.to_host(want), **tol)


def test_class_target_stats_matches_reference(backend):
    compiled(backend, "class_target_stats")
    b = bg.get_backend(backend)
    for t, ignore in [([0, 4, 2, 2], 2), ([0, 5, 1], -100), ([-1, 0, -100], -100), ([3, 3], 3)]:
        got = [(b.arrays.empty((), np.float32), b.arrays.empty((), np.bool_)) for _ in range(2)]
        b.F.class_target_stats(b.asarray(np.array(t)), 5, ignore, *got[0])
        reference(backend).class_target_stats(b.asarray(np.array(t)), 5, ignore, *got[1])
        assert [(b.to_host(c), bool(b.to_host(f))) for c, f in got[:1]] == \
            [(b.to_host(c), bool(b.to_host(f))) for c, f in got[1:]], t


def test_kernels_fall_back_for_arrays_they_do_not_take(backend):
    b = bg.get_backend(backend)
    g, out = _arrays(backend, "float32", (6, 8), (8, 6))
    res = b.F.relu_backward(g, out.T)  # a transposed (non-contiguous) operand
    np.testing.assert_array_equal(b.to_host(res), b.to_host(g) * (b.to_host(out).T > 0))
    y = b.asarray(np.arange(-3, 3, dtype=np.int64))  # an integer array
    np.testing.assert_array_equal(b.to_host(b.F.bias_relu_(y, None)), [0, 0, 0, 0, 1, 2])


# --- Linear + ReLU as one op ------------------------------------------------------------------

def test_linear_relu_gradcheck(backend):
    rng = np.random.default_rng(0)
    x = bg.tensor(rng.standard_normal((5, 3)), device=backend, requires_grad=True)
    w = bg.tensor(rng.standard_normal((4, 3)), device=backend, requires_grad=True)
    bias = bg.tensor(rng.standard_normal(4), device=backend, requires_grad=True)
    assert bg.gradcheck(lambda x, w, b: F.linear_relu(x, w, b), [x, w, bias])
    assert bg.gradcheck(lambda x, w: F.linear_relu(x, w), [x, w])
    x3 = bg.tensor(rng.standard_normal((2, 5, 3)), device=backend, requires_grad=True)
    assert bg.gradcheck(lambda x, w, b: F.linear_relu(x, w, b), [x3, w, bias])


def test_linear_relu_second_order(backend):
    """create_graph through the fused op gives the same Hessian-vector product as the two ops."""
    rng = np.random.default_rng(1)
    x = bg.tensor(rng.standard_normal((4, 3)), device=backend)
    w0 = rng.standard_normal((5, 3))

    def hvp(f):
        w = bg.tensor(w0, device=backend, requires_grad=True)
        (g,) = bg.grad((f(x, w) ** 2).sum(), w, create_graph=True)
        (h,) = bg.grad((g * g).sum(), w)
        return h.numpy()
    np.testing.assert_allclose(hvp(F.linear_relu), hvp(lambda x, w: bg.relu(F.linear(x, w))), rtol=1e-10)


def test_sequential_fuses_linear_then_relu(backend):
    bg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2), nn.Tanh()).to(backend)
    x = bg.tensor(np.random.default_rng(2).standard_normal((8, 3)), device=backend).float()
    y = model(x)
    assert y._node.inputs[0]._node.inputs[0]._node.op.name == "linear_relu"

    class MyReLU(nn.ReLU):  # a subclass may do anything in forward: never fused
        pass
    unfused = nn.Sequential(model[0], MyReLU(), model[2], model[3])
    y2 = unfused(x)
    assert y2._node.inputs[0]._node.inputs[0]._node.op.name == "relu"
    np.testing.assert_allclose(y.numpy(), y2.numpy(), rtol=1e-6)
    y.sum().backward()
    g1 = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    y2.sum().backward()
    for a, p in zip(g1, model.parameters()):
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-6, atol=1e-7)


# --- windows: im2col / col2im and max pooling ------------------------------------------------------

WINDOWS = [((3, 3), (1, 1), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 1), (1, 0)), ((1, 1), (1, 1), (0, 0)),
           ((3, 3), (2, 2), (2, 1))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel,stride,padding", WINDOWS)
def test_im2col_and_col2im_match_reference(backend, size_path, dtype, kernel, stride, padding):
    compiled(backend, "im2col", "col2im")
    b = bg.get_backend(backend)
    (x,) = _arrays(backend, dtype, (2, 3, 7, 6))
    cols = b.F.im2col(x, kernel, stride, padding, -2.5)
    ref = reference(backend).im2col(x, kernel, stride, padding, -2.5)
    np.testing.assert_array_equal(b.to_host(cols), b.to_host(ref))
    (c,) = _arrays(backend, dtype, tuple(ref.shape), seed=1)
    np.testing.assert_allclose(b.to_host(b.F.col2im(c, x.shape, kernel, stride, padding)),
                               b.to_host(reference(backend).col2im(c, x.shape, kernel, stride, padding)),
                               rtol=1e-6 if dtype == "float32" else 1e-14)


POOLS = [((2, 2), (2, 2), (0, 0)), ((3, 3), (3, 3), (0, 0)), ((2, 3), (2, 3), (0, 0)),  # dense windows
         ((3, 3), (1, 1), (1, 1)), ((2, 2), (1, 1), (0, 0))]  # overlapping: the reference path


def _pool_input(backend, dtype):
    """Values with ties (rounded) and a NaN, on an odd-sized plane (uncovered rows and columns)."""
    b = bg.get_backend(backend)
    x = np.round(np.random.default_rng(5).standard_normal((2, 3, 7, 8)), 1).astype(dtype)
    x[1, 2, 3, 4] = np.nan
    return b.asarray(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel,stride,padding", POOLS)
def test_max_pool_kernels_match_reference(backend, size_path, dtype, kernel, stride, padding):
    compiled(backend, "max_pool2d", "max_pool2d_backward", "max_pool2d_gather")
    b, ref = bg.get_backend(backend), reference(backend)
    x = _pool_input(backend, dtype)
    out = b.F.max_pool2d(x, kernel, stride, padding)
    out_ref = ref.max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(b.to_host(out), b.to_host(out_ref))  # NaN where the NaN's window is
    assert np.isnan(b.to_host(out)).sum() >= 1
    (g,) = _arrays(backend, dtype, tuple(out.shape), seed=2)
    gx = b.F.max_pool2d_backward(g, x, out, kernel, stride, padding)
    np.testing.assert_allclose(b.to_host(gx), b.to_host(ref.max_pool2d_backward(g, x, out, kernel, stride, padding)),
                               rtol=1e-6)
    (gg,) = _arrays(backend, dtype, tuple(x.shape), seed=3)
    np.testing.assert_allclose(b.to_host(b.F.max_pool2d_gather(gg, x, out, kernel, stride, padding)),
                               b.to_host(ref.max_pool2d_gather(gg, x, out, kernel, stride, padding)), rtol=1e-6)


def test_max_pool_reference_sends_each_window_to_its_first_maximum():
    ref = reference("numpy")
    x = np.array([[[[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 2.0, np.nan]]]])
    out = ref.max_pool2d(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(out, [[[[3.0, np.nan]]]])
    gx = ref.max_pool2d_backward(np.array([[[[10.0, 20.0]]]]), x, out, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(gx, [[[[0, 10, 0, 0], [0, 0, 0, 20]]]])


def test_max_pool_second_order(backend):
    """create_graph through max pooling (the recorded scatter and gather are each other's VJP)."""
    rng = np.random.default_rng(6)
    x = bg.tensor(rng.standard_normal((2, 2, 4, 6)), device=backend, requires_grad=True)

    def grad_norm(x):
        (gx,) = bg.grad((bg.max_pool2d(x * x, 2) ** 3).sum(), x, create_graph=True)
        return (gx * gx).sum()
    assert bg.gradcheck(grad_norm, [x])


# --- batch normalisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(16, 3), (8, 3, 5), (4, 3, 5, 6)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_kernels_match_reference(backend, size_path, dtype, shape, relu):
    compiled(backend, "batch_norm_stats", "batch_norm_forward", "batch_norm_backward")
    b, ref = bg.get_backend(backend), reference(backend)
    x, g, w, bias = _arrays(backend, dtype, shape, shape, (3,), (3,))
    x = x * 3 + 10  # a mean far from zero: the centred sums must not cancel
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-11, atol=1e-12)
    mean, var = b.F.batch_norm_stats(x)
    mean_r, var_r = ref.batch_norm_stats(x)
    np.testing.assert_allclose(b.to_host(mean), b.to_host(mean_r), **tol)
    np.testing.assert_allclose(b.to_host(var), b.to_host(var_r), **tol)
    invstd = 1 / b.xp.sqrt(var_r + 1e-5)
    for wb in ((w, bias), (None, None)):
        y = b.F.batch_norm_forward(x, mean_r, invstd, *wb, relu=relu)
        y_ref = ref.batch_norm_forward(x, mean_r, invstd, *wb, relu=relu)
        np.testing.assert_allclose(b.to_host(y), b.to_host(y_ref), **tol)
        got = b.F.batch_norm_backward(g, x, mean_r, invstd, wb[0], out=y_ref if relu else None)
        want = ref.batch_norm_backward(g, x, mean_r, invstd, wb[0], out=y_ref if relu else None)
        for a, r in zip(got, want):
            np.testing.assert_allclose(b.to_host(a), b.to_host(r), **tol)
    gx, gw, gb = b.F.batch_norm_backward(g, x, mean_r, invstd, w, needs=(False, True, False))
    assert gx is None and gb is None and gw is not None


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_op_gradcheck(backend, relu):
    rng = np.random.default_rng(7)
    x = bg.tensor(rng.standard_normal((5, 3, 4)) * 2 + 1, device=backend, requires_grad=True)
    w = bg.tensor(rng.standard_normal(3), device=backend, requires_grad=True)
    bias = bg.tensor(rng.standard_normal(3), device=backend, requires_grad=True)
    fn = F.batch_norm_relu if relu else F.batch_norm
    assert bg.gradcheck(lambda x, w, b: fn(x, None, None, w, b, training=True), [x, w, bias])
    assert bg.gradcheck(lambda x, b: fn(x, None, None, None, b, training=True), [x, bias])
    assert bg.gradcheck(lambda x, w: fn(x, None, None, w, None, training=True), [x, w])
    assert bg.gradcheck(lambda x: fn(x, None, None, training=True), [x])


def test_batch_norm_second_order_matches_composed_formula(backend):
    rng = np.random.default_rng(8)
    x0, w0 = rng.standard_normal((6, 2, 3)), rng.standard_normal(2)

    def composed(x, w):
        d = x - x.mean(axis=(0, 2), keepdims=True)
        return d / bg.sqrt((d * d).mean(axis=(0, 2), keepdims=True) + 1e-5) * w.reshape(1, 2, 1)

    def hvp(fn):
        x = bg.tensor(x0, device=backend, requires_grad=True)
        w = bg.tensor(w0, device=backend, requires_grad=True)
        gx, gw = bg.grad((bg.tanh(fn(x, w)) ** 2).sum(), [x, w], create_graph=True)
        return [t.numpy() for t in bg.grad((gx * gx).sum() + (gw * gw).sum(), [x, w])]
    for a, r in zip(hvp(lambda x, w: F.batch_norm(x, None, None, w, None, training=True)), hvp(composed)):
        np.testing.assert_allclose(a, r, rtol=1e-8, atol=1e-10)


def test_sequential_fuses_batch_norm_then_relu(backend):
    bg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()).to(backend)
    x = bg.tensor(np.random.default_rng(9).standard_normal((4, 2, 5, 5)), device=backend).float()
    y = model(x)
    assert y._node.op.name == "batch_norm_relu"
    rm = model[1].running_mean.numpy().copy()
    model[1].running_mean.array[...] = 0  # run again unfused from the same statistics
    model[1].running_var.array[...] = 1
    y2 = bg.relu(model[1](model[0](x)))
    assert y2._node.op.name == "relu"
    np.testing.assert_allclose(y.numpy(), y2.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[1].running_mean.numpy(), rm, rtol=1e-6)
    model.eval()  # evaluation: running statistics, composed ops
    np.testing.assert_allclose(model(x).numpy(), bg.relu(model[1](model[0](x))).numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("idx_shape, row", [((13,), (4,)), ((3, 5), (2, 3)), ((6,), ())])
def test_index_backward_rows_match_reference(backend, dtype, idx_shape, row):
    """An embedding's gradient: rows scatter-added at an integer index, repeats and negative
    indices included, compiled where the backend compiles it."""
    if type(bg.get_backend(backend).F).index_backward is ArrayNamespace.index_backward:
        pytest.skip(f"the {backend.name} backend runs the reference index_backward")
    b = bg.get_backend(backend)
    rng = np.random.default_rng(2)
    n = 7
    k = b.asarray(rng.integers(-n, n, idx_shape))
    (g,) = _arrays(backend, dtype, idx_shape + row)
    for key in (k, (k,)):
        res = b.F.index_backward(g, (n,) + row, key)
        ref = reference(backend).index_backward(g, (n,) + row, key)
        assert res.dtype == g.dtype and res.shape == (n,) + row
        np.testing.assert_allclose(b.to_host(res), b.to_host(ref), rtol=1e-6 if dtype == "float32" else 1e-12)
    with pytest.raises(IndexError, match="index 7 is out of bounds for dimension 0 with size 7"):
        b.F.index_backward(g.reshape((-1,) + row)[:1], (n,) + row, b.asarray(np.array([7])))


def test_embedding_gradient_through_the_compiled_rows(backend):
    emb = nn.Embedding(10, 3).to(backend).double()
    idx = bg.tensor(np.array([[1, 1, 9], [0, 9, 9]]), device=backend)
    w = np.random.default_rng(0).standard_normal((2, 3, 3))
    (emb(idx) * bg.tensor(w, device=backend)).sum().backward()
    want = np.zeros((10, 3))
    np.add.at(want, idx.numpy(), w)
    np.testing.assert_allclose(emb.weight.grad.numpy(), want, rtol=1e-12)
