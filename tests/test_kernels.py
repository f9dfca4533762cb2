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


def test_serial_and_parallel_compilations_are_cached_apart():
    """Numba's disk cache keys a function by name, line and bytecode, not by ``parallel=True``: under
    one name the parallel compilation of a kernel loaded the serial one's machine code (and ran
    serial), or the other way round. Each kernel's two compilations have two cache files."""
    kernels = [v for v in vars(numba_kernels).values() if hasattr(v, "serial") and hasattr(v, "parallel")]
    pool = numba_kernels._pool_kernels(2, 2) + numba_kernels._window_kernels(3, 3, 1, 1)  # closures too
    assert len(kernels) >= 10
    for k in kernels + list(pool):
        files = [f._cache._cache_file._index_name for f in (k.serial, k.parallel)]
        assert files[0] != files[1], k.__name__


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
@pytest.mark.parametrize("scale", [1.0, 1 / 0.7], ids=["plain", "dropout-scaled"])
def test_relu_backward_matches_reference(backend, size_path, dtype, scale):
    compiled(backend, "relu_backward")
    b = bg.get_backend(backend)
    g, out = _arrays(backend, dtype, (9, 11), (9, 11))
    out = b.F.bias_relu_(out, None)
    res = b.F.relu_backward(g, out, scale)
    np.testing.assert_array_equal(b.to_host(res), b.to_host(reference(backend).relu_backward(g, out, scale)))
    assert res is not g and res.dtype == g.dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(9, 11), (2, 4, 5)])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.7], ids=["plain", "dropout-scaled"])
def test_relu_backward_colsum_matches_reference(backend, dtype, shape, scale):
    compiled(backend, "relu_backward_colsum")
    b = bg.get_backend(backend)
    g, out = _arrays(backend, dtype, shape, shape, seed=4)
    out = b.F.bias_relu_(out, None)
    gm_ref, cs_ref = reference(backend).relu_backward_colsum(g, out, scale)
    gm, cs = b.F.relu_backward_colsum(g, out, scale)
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



def _gelu_inputs(backend, dtype, approximate):
    """Spread over GELU's regions: the negative tail (where the reference's 1 + erf cancels),
    the bend, the linear side; and 0, inf and NaN, and for the exact form huge values (the tanh
    form's x^3 overflows float32 in the reference there, and its gradient becomes 0 * inf)."""
    huge = [-1e30, 1e30] if approximate == "none" else [-1.0, 1.0]
    x = np.concatenate([np.linspace(-12, 12, 241), [0.0, -0.0, 1e-30, *huge, np.inf, -np.inf, np.nan]])
    g = np.random.default_rng(7).standard_normal(x.size)
    b = bg.get_backend(backend)
    return b, b.asarray(x.astype(dtype).reshape(3, -1)), b.asarray(g.astype(dtype).reshape(3, -1))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # inf inputs
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_kernels_match_reference(backend, size_path, dtype, approximate):
    compiled(backend, "gelu_forward", "gelu_backward")
    b, x, g = _gelu_inputs(backend, dtype, approximate)
    ref = reference(backend)
    y, gx = b.F.gelu_forward(x, approximate), b.F.gelu_backward(g, x, approximate)
    assert y.dtype == gx.dtype == x.dtype and y.shape == gx.shape == x.shape
    y_ref, gx_ref = (b.to_host(a) for a in (ref.gelu_forward(x, approximate), ref.gelu_backward(g, x, approximate)))
    y, gx = b.to_host(y), b.to_host(gx)
    # a few ulps of the values' scale (12); an ulp of it in float32 is 1e-6: the compiled Phi comes
    # through erfc, the reference's 1 + erf loses digits in the negative tail, and exp/tanh/erf are
    # each library's own
    atol = {"float32": 4e-6, "float64": 1e-14}[dtype]
    np.testing.assert_allclose(y, y_ref, rtol=atol / 12, atol=atol)
    np.testing.assert_allclose(gx, gx_ref, rtol=atol / 12, atol=atol)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch_in_float32(backend, approximate):
    """The op, forward and backward, against torch's float32 GELU."""
    torch = pytest.importorskip("torch")
    xs = np.linspace(-6, 6, 1201).astype(np.float32)
    x = bg.tensor(xs, device=bg.get_backend(backend), requires_grad=True)
    y = bg.gelu(x, approximate=approximate)
    y.sum().backward()
    xt = torch.tensor(xs, requires_grad=True)
    yt = torch.nn.functional.gelu(xt, approximate=approximate)
    yt.sum().backward()
    # to 4 float32 ulps of the largest value (6): torch's own 1 + erf loses digits in the negative
    # tail (a relative 4e-5 from the exact value at x = -2.6, and 0 instead of -1.2e-6 at x = -5.3)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_backward_matches_reference(backend, size_path, dtype):
    """The compiled mask product (the cupy forward and backward are checked against the reference
    under the stand-in, tests/array/test_cuda_kernels.py)."""
    compiled(backend, "dropout_backward")
    b, ref = bg.get_backend(backend), reference(backend)
    x, g = _arrays(backend, dtype, (9, 11), (9, 11), seed=8)
    g[0, :3] = [np.inf, np.nan, -np.inf]  # g * 0 where dropped: NaN, as the reference's product
    keep = b.arrays.empty(x.shape, np.bool_)
    ref.dropout_(x, 0.3, keep)
    assert 0 < int(b.to_host(keep).sum()) < keep.size
    np.testing.assert_array_equal(b.to_host(b.F.dropout_backward(g, keep, 0.3)),
                                  b.to_host(ref.dropout_backward(g, keep, 0.3)))


def test_dropout_op_first_and_second_order(backend):
    """F.dropout is one op: its gradient is the mask times 1 / (1 - p), and under create_graph the
    same product recorded (so d2/dx2 of sum(dropout(x)^2) is 2 (mask / (1 - p))^2)."""
    b = bg.get_backend(backend)
    x = bg.tensor(np.linspace(-1, 1, 40), device=b, requires_grad=True)
    bg.manual_seed(3)
    y = F.dropout(x, 0.25)
    assert y._node.op.name == "dropout"  # one op, not a mask multiply
    kept = y.numpy() != 0
    assert 0 < kept.sum() < 40
    np.testing.assert_allclose(y.numpy(), np.where(kept, x.numpy() / 0.75, 0), rtol=1e-15)
    (g,) = bg.grad((y * y).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 2 * y.numpy() * kept / 0.75, rtol=1e-15)
    (gg,) = bg.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), 2 * kept / 0.75 ** 2, rtol=1e-15)

# libm's (or CUDA's) exp and log against NumPy's, and another summation order: a few ulps
CE_RTOL = {"float32": 2e-6, "float64": 1e-13}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_kernels_match_reference(backend, size_path, dtype, reduction, ls):
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


# --- the LSTM cell -------------------------------------------------------------------------------

@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided-state"])
def test_lstm_cell_matches_reference(backend, size_path, strided):
    """One LSTM step and its gradient, compiled (float32, activations through the vectorised exp:
    tanh to 1 ulp, sigmoid to 2.2) against the reference statements, with saturated and NaN gates;
    the previous cell state as the strided slice of the step before's output, as the op passes it."""
    compiled(backend, "lstm_cell_", "lstm_cell_backward")
    b = bg.get_backend(backend)
    B, H = 7, 9
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((B, 4 * H)) * 4).astype(np.float32)
    a[0, :4] = [40.0, -40.0, 100.0, -100.0]
    a[1, 2 * H] = np.nan
    prev_out = rng.standard_normal((B, 6 * H)).astype(np.float32)
    c = prev_out[:, H:2 * H] if strided else np.ascontiguousarray(prev_out[:, H:2 * H])
    g, dh, dc = (rng.standard_normal(s).astype(np.float32) for s in ((B, 6 * H), (B, H), (B, H)))
    dev = [b.asarray(v) for v in (a, prev_out, g, dh, dc)]
    dc_prev = dev[1][:, H:2 * H] if strided else b.asarray(c)
    host = ArrayNamespace(bg.get_backend("numpy"))  # the statements, on host arrays
    out, out_ref = b.arrays.empty((B, 6 * H), np.float32), np.empty((B, 6 * H), np.float32)
    b.F.lstm_cell_(b.asarray(a.copy()), dc_prev, out)
    host.lstm_cell_(a.copy(), c, out_ref)
    got = b.to_host(out)
    assert np.isnan(got[1]).sum() == np.isnan(out_ref[1]).sum() > 0
    np.testing.assert_allclose(got, out_ref, rtol=1e-6, atol=2e-7)
    for rec in ((dh, dc), (None, None)):
        d_rec = [None if v is None else b.asarray(v) for v in rec]
        da, dcp = b.F.lstm_cell_backward(dev[2], *d_rec, b.asarray(out_ref), dc_prev)
        da_ref, dcp_ref = host.lstm_cell_backward(g, *rec, out_ref, c)
        scale = float(np.nanmax(np.abs(da_ref)))
        np.testing.assert_allclose(b.to_host(da), da_ref, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(b.to_host(dcp), dcp_ref, rtol=1e-5, atol=1e-6 * scale)


# --- Linear + ReLU + Dropout as one op -----------------------------------------------------------

def _mlp_with_dropout(backend, p):
    bg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3), nn.ReLU(),
                         nn.Dropout(p)).to(backend)


def _one_by_one(model, x):
    for m in model:
        x = m(x)
    return x


def _dropout_apart(model):
    """``model`` with each Dropout after its Linear + ReLU op (the same column-sum kernels: bitwise
    comparable; module by module, the bias gradients would differ by summation order)."""
    m = list(model)
    return nn.Sequential(nn.Sequential(m[0], m[1]), m[2], nn.Sequential(m[3], m[4]), m[5])


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_sequential_fuses_linear_relu_dropout_with_the_same_masks(backend, p):
    """A Linear, a ReLU and a Dropout in a Sequential run as one op: the same outputs, gradients and
    masks (the generator's same draws) as Linear + ReLU and the Dropout apart, and the generator left
    in the same place."""
    b = bg.get_backend(backend)
    model = _mlp_with_dropout(backend, p)
    x = bg.tensor(np.random.default_rng(5).standard_normal((40, 5)), device=backend).float()
    results = []
    for run in (model, _dropout_apart(model)):
        bg.manual_seed(7)
        y = run(x)
        (y * bg.arange(3, device=backend).float()).sum().backward()
        results.append((y.numpy(), [q.grad.numpy().copy() for q in model.parameters()], b.generator.offset))
        model.zero_grad(set_to_none=True)
    (y_fused, g_fused, off_fused), (y_ref, g_ref, off_ref) = results
    assert 0 < np.count_nonzero(y_fused) < y_fused.size
    np.testing.assert_array_equal(y_fused, y_ref)
    for a, r in zip(g_fused, g_ref):
        np.testing.assert_array_equal(a, r)
    assert off_fused == off_ref
    bg.manual_seed(7)
    y = model(x)
    assert y._node.op.name == "linear_relu" and y._node.kwargs == {"dropout": p}


def test_linear_relu_dropout_gradcheck_and_second_order(backend):
    """The fused op's gradient is the ReLU mask times the kept mask times 1 / (1 - p): finite
    differences with the mask held (the same seed per evaluation), and under create_graph the same
    Hessian-vector product as the two ops composed."""
    rng = np.random.default_rng(3)
    x = bg.tensor(rng.standard_normal((6, 3)), device=backend, requires_grad=True)
    w = bg.tensor(rng.standard_normal((4, 3)), device=backend, requires_grad=True)
    bias = bg.tensor(rng.standard_normal(4), device=backend, requires_grad=True)

    def seeded(fn):
        def f(*args):
            bg.manual_seed(2)
            return fn(*args)
        return f
    assert bg.gradcheck(seeded(lambda x, w, b: F.linear_relu(x, w, b, dropout=0.4)), [x, w, bias])
    assert bg.gradcheck(seeded(lambda x, w: F.linear_relu(x, w, dropout=0.4)), [x, w])

    def hvp(f):
        w2 = bg.tensor(w.numpy(), device=backend, requires_grad=True)
        (g,) = bg.grad((f(x.detach(), w2) ** 2).sum(), w2, create_graph=True)
        (h,) = bg.grad((g * g).sum(), w2)
        return h.numpy()
    fused = hvp(seeded(lambda x, w: F.linear_relu(x, w, dropout=0.4)))
    composed = hvp(seeded(lambda x, w: F.dropout(bg.relu(F.linear(x, w)), 0.4)))
    assert np.abs(fused).max() > 0
    np.testing.assert_allclose(fused, composed, rtol=1e-10)


def test_dropout_fusion_falls_back_where_it_must(backend):
    """Eval mode: Linear + ReLU, the Dropout the identity. p = 1 (x * 0 keeps NaN) and a hooked
    Dropout: the Dropout's own op after Linear + ReLU."""
    x = bg.tensor(np.random.default_rng(6).standard_normal((4, 5)), device=backend).float()
    model = _mlp_with_dropout(backend, 0.5).eval()
    y = model(x)
    assert y._node.op.name == "linear_relu" and y._node.kwargs == {}
    np.testing.assert_array_equal(y.numpy(), _one_by_one(model, x).numpy())
    assert model.train()(x)._node.kwargs == {"dropout": 0.5}
    model[5].p = 1.0
    y = model(x)
    assert y._node.op.name != "linear_relu" and not np.any(y.numpy())
    model[5].p = 0.5
    h = model[5].register_forward_hook(lambda m, a, out: out)
    assert model(x)._node.op.name == "dropout"
    h.remove()
    with pytest.raises(ValueError, match=r"dropout probability has to be in \[0, 1\), but got 1.0"):
        F.linear_relu(x, model[0].weight, model[0].bias, dropout=1.0)


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
        slot = b.asarray(np.full((n,) + row, 5.0, dtype))  # a gradient slot holding stale values
        assert b.F.index_backward(g, (n,) + row, key, slot) is slot  # zeroed, then scattered into
        np.testing.assert_array_equal(b.to_host(slot), b.to_host(res))
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
    # with an optimizer, the gradient is scattered straight into the weight's slot of the flat buffer,
    # every step (the slot holds the last step's values until then)
    opt = bg.optim.SGD(emb.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (emb(idx) * bg.tensor(w, device=backend)).sum().backward()
        assert emb.weight.grad is emb.weight._grad_slot
        np.testing.assert_allclose(emb.weight.grad.numpy(), want, rtol=1e-12)
        opt.step()


# --- softmax over the last axis, LayerNorm over rows --------------------------------------------------

ROW_SHAPES = [(0, 5), (1, 1), (4, 1), (5, 3), (3, 1000), (2, 3, 7), (40, 33)]
# the compiled exp (a polynomial on the numba backend, libm's in CUDA C) against NumPy's, and other
# summation orders: a few ulps of the values' scale
ROW_TOL = {"float32": dict(rtol=2e-6, atol=2e-6), "float64": dict(rtol=1e-13, atol=1e-13)}


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the -inf row, in the reference
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_kernels_match_reference(backend, size_path, dtype, shape, kind):
    compiled(backend, "_rows_softmax", "_rows_softmax_backward")
    b, ref = bg.get_backend(backend), reference(backend)
    x, g = _arrays(backend, dtype, shape, shape, seed=10)
    x = x * 4
    if x.size > 8:  # a NaN (its row NaN), an all -inf row (NaN, as torch), +inf and huge values, and
        # a row far from 0 (log_softmax's x - max must come first: max + log(sum) rounds at 1000's ulp)
        x[1] += 1000
        x[(0,) * (x.ndim - 1)] = -np.inf
        flat = x.reshape(-1)
        flat[-1], flat[-2], flat[-3 - shape[-1]] = np.nan, np.inf, 1e4
    y, y_ref = getattr(b.F, f"{kind}_forward")(x), getattr(ref, f"{kind}_forward")(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y, y_ref = b.to_host(y), b.to_host(y_ref)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_allclose(y, y_ref, **ROW_TOL[dtype])
    out = b.asarray(np.nan_to_num(y_ref, nan=0.0))  # the backward given a finite forward
    gx = getattr(b.F, f"{kind}_backward")(g, out)
    gx_ref = getattr(ref, f"{kind}_backward")(g, out)
    assert gx.shape == x.shape and gx.dtype == x.dtype
    np.testing.assert_allclose(b.to_host(gx), b.to_host(gx_ref), **ROW_TOL[dtype])


LN_SHAPES = [(0, 3), (1, 1), (4, 1), (5, 3), (3, 1000), (64, 33)]
LN_NEEDS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
def test_layer_norm_kernels_match_reference(backend, size_path, dtype, shape):
    compiled(backend, "layer_norm_forward", "layer_norm_backward")
    b, ref = bg.get_backend(backend), reference(backend)
    x, g, w, bias = _arrays(backend, dtype, shape, shape, shape[1:], shape[1:], seed=11)
    x = x * 3 + 10  # a mean far from zero: the centred sums must not cancel
    # torch's float32 LayerNorm also reduces rows in float; the numba backend sums in float64
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    stats = [b.arrays.empty(shape[:1], dtype) for _ in range(4)]
    for wb in ((w, bias), (None, None), (w, None), (None, bias)):
        y = b.F.layer_norm_forward(x, *wb, 1e-5, *stats[:2])
        y_ref = ref.layer_norm_forward(x, *wb, 1e-5, *stats[2:])
        assert y.shape == x.shape and y.dtype == x.dtype
        for a, r in zip((y, *stats[:2]), (y_ref, *stats[2:])):
            np.testing.assert_allclose(b.to_host(a), b.to_host(r), **tol)
        for needs in LN_NEEDS:
            got = b.F.layer_norm_backward(g, x, *stats[2:], wb[0], needs)
            want = ref.layer_norm_backward(g, x, *stats[2:], wb[0], needs)
            for k, (a, r) in enumerate(zip(got, want)):
                assert (a is None) == (r is None) == (not needs[k]), (needs, k)
                if r is not None:
                    assert a.shape == r.shape and a.dtype == r.dtype
                    scale = max(float(np.abs(b.to_host(r)).max(initial=0)), 1.0)  # column sums grow with rows
                    np.testing.assert_allclose(b.to_host(a), b.to_host(r), rtol=tol["rtol"],
                                               atol=tol["atol"] * scale, err_msg=f"{needs} gradient {k}")


def test_row_kernels_fall_back_for_arrays_they_do_not_take(backend):
    """Transposed (non-contiguous) rows and float16 take the reference's path, with its results."""
    b, ref = bg.get_backend(backend), reference(backend)
    (x,) = _arrays(backend, "float32", (6, 5))
    for kind in ("softmax_forward", "log_softmax_forward"):
        np.testing.assert_allclose(b.to_host(getattr(b.F, kind)(x.T)), b.to_host(getattr(ref, kind)(x.T)), rtol=1e-6)
    h = x.astype(np.float16)
    stats = [b.arrays.empty((6,), np.float32) for _ in range(4)]
    y = b.F.layer_norm_forward(h, None, None, 1e-5, *stats[:2])
    assert y.dtype == np.float16
    np.testing.assert_array_equal(b.to_host(y), b.to_host(ref.layer_norm_forward(h, None, None, 1e-5, *stats[2:])))


# --- the LayerNorm op ---------------------------------------------------------------------------------

@pytest.mark.parametrize("normalized", [(4,), (3, 4)], ids=str)
def test_layer_norm_gradcheck(backend, normalized):
    rng = np.random.default_rng(12)
    x = bg.tensor(rng.standard_normal((2, 3, 4)) * 2 + 1, device=backend, requires_grad=True)
    w = bg.tensor(rng.standard_normal(normalized), device=backend, requires_grad=True)
    bias = bg.tensor(rng.standard_normal(normalized), device=backend, requires_grad=True)
    assert bg.gradcheck(lambda x, w, b: F.layer_norm(x, normalized, w, b), [x, w, bias])
    assert bg.gradcheck(lambda x, w: F.layer_norm(x, normalized, w), [x, w])
    assert bg.gradcheck(lambda x, b: F.layer_norm(x, normalized, None, b), [x, bias])
    assert bg.gradcheck(lambda x: F.layer_norm(x, normalized), [x])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_matches_torch(backend, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    xs, gs = (rng.standard_normal((3, 5, 2, 6)).astype(dtype) * 3 + 2 for _ in range(2))
    ws, bs = (rng.standard_normal((2, 6)).astype(dtype) for _ in range(2))
    ours = [bg.tensor(a, device=backend, requires_grad=True) for a in (xs, ws, bs)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (xs, ws, bs)]
    y = F.layer_norm(ours[0], (2, 6), ours[1], ours[2], eps=1e-3)
    yt = torch.nn.functional.layer_norm(theirs[0], (2, 6), theirs[1], theirs[2], eps=1e-3)
    y.backward(bg.tensor(gs, device=backend))
    yt.backward(torch.tensor(gs))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **tol)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), **tol)


def test_layer_norm_second_order_matches_composed_formula(backend):
    """create_graph through the op (its VJP over the recorded ops) gives the composed formula's
    second derivatives, in the input and the weight."""
    rng = np.random.default_rng(14)
    x0, w0, b0 = rng.standard_normal((4, 2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))

    def composed(x, w, b):
        d = x - x.mean(axis=(1, 2), keepdims=True)
        return d / bg.sqrt((d * d).mean(axis=(1, 2), keepdims=True) + 1e-5) * w + b

    def hvp(fn):
        x, w, b = (bg.tensor(a, device=backend, requires_grad=True) for a in (x0, w0, b0))
        gx, gw = bg.grad((bg.tanh(fn(x, w, b)) ** 2).sum(), [x, w], create_graph=True)
        return [t.numpy() for t in bg.grad((gx * gx).sum() + (gw * gw).sum(), [x, w, b])]
    for a, r in zip(hvp(lambda x, w, b: F.layer_norm(x, (2, 3), w, b)), hvp(composed)):
        np.testing.assert_allclose(a, r, rtol=1e-8, atol=1e-10)
    x = bg.tensor(x0, device=backend, requires_grad=True)

    def grad_norm(x):
        (gx,) = bg.grad((F.layer_norm(x, (3,)) ** 3).sum(), x, create_graph=True)
        return (gx * gx).sum()
    assert bg.gradcheck(grad_norm, [x])


def test_layer_norm_is_one_op(backend):
    x = bg.tensor(np.random.default_rng(15).standard_normal((2, 3, 4)), device=backend, requires_grad=True)
    ln = nn.LayerNorm((3, 4)).to(backend).double()
    y = ln(x)
    assert y._node.op.name == "layer_norm" and y._node.inputs[0] is x


# --- softmax and log-softmax ops ---------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bg.softmax, bg.log_softmax], ids=lambda f: f.__name__)
def test_softmax_ops_on_any_axis_and_layout(backend, fn):
    """The last axis (the kernels) and the others (the same statement over that axis), contiguous
    or not, give the composed values and gradients; and create_graph through either."""
    rng = np.random.default_rng(16)
    x0 = rng.standard_normal((3, 4, 5))
    for axis in (-1, 0, 1):
        for transposed in (False, True):
            x = bg.tensor(x0, device=backend, requires_grad=True)
            xin = x.swapaxes(0, 2) if transposed else x
            assert bg.gradcheck(lambda x: fn(x, dim=axis), [xin.detach().requires_grad_()])
            want = xin.numpy() - xin.numpy().max(axis=axis, keepdims=True)
            want = want - np.log(np.exp(want).sum(axis=axis, keepdims=True))
            np.testing.assert_allclose(fn(xin, dim=axis).numpy(), want if fn is bg.log_softmax else np.exp(want),
                                       rtol=1e-12, atol=1e-15)
    x = bg.tensor(x0, device=backend, requires_grad=True)

    def grad_norm(x):
        (gx,) = bg.grad((fn(x * x, dim=-1) ** 3).sum(), x, create_graph=True)
        return (gx * gx).sum()
    assert bg.gradcheck(grad_norm, [x])
