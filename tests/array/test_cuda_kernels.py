"""The cupy backend's hot-op kernels (``backprop_gpu.array.kernels.cuda``): CUDA C, checked here
without a GPU.

* the source compiles with NVRTC under the options CuPy's RawModule passes, and each PTX entry
  takes the parameters the namespace passes;
* the very same source, built for the host (it is C99 outside ``__CUDACC__``) and run through
  the recording CuPy stand-in by :class:`~backprop_gpu.array.kernels.cuda.CudaNamespace` itself,
  matches the reference kernels over NumPy in float32 and float64: ignored rows, all rows
  ignored, one class, label smoothing, every reduction, huge and NaN logits, out-of-range targets;
* each kernel is one launch, and the module is compiled once per device.

The same kernels against the reference on a real GPU: tests/test_kernels.py (its cupy rows).

Tolerances: the ReLU kernels are bitwise equal (one rounding per element on both sides). The
column sums accumulate in double (rtol 1e-6 in float32, 1e-14 in float64). Cross-entropy differs
from NumPy by libm's exp/log against NumPy's own and by the summation order: rtol 2e-6 in
float32, 1e-13 in float64 (atol the same times the values' scale, for the losses and gradients
that come out near 0).
"""
import re
import sys

import numpy as np
import pytest

import recording_cupy
from backprop_gpu.array.kernels import cuda
from backprop_gpu.array.namespace import ArrayNamespace

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # test_cuda_source's NVRTC helpers
from test_cuda_source import NVRTC_OPTIONS, _nvrtc, nvrtc_ptx  # noqa: E402

DTYPES = ("float32", "float64")
CE_RTOL = {"float32": 2e-6, "float64": 1e-13}
SUM_RTOL = {"float32": 1e-6, "float64": 1e-14}
# kernel: parameters the namespace passes
PARAMS = {"relu": 2, "bias_relu": 4, "relu_backward": 5, "relu_backward_colsum": 7, "ce_forward": 13,
          "ce_backward": 13, "class_target_stats": 6, "gelu": 4, "gelu_backward": 5, "scatter_add_rows": 6}
# the row kernels: softmax and log-softmax over the last axis, LayerNorm over rows
PARAMS |= {"softmax": 5, "softmax_backward": 6, "layer_norm": 11, "layer_norm_backward": 14, "layer_norm_colsums": 8}
# batch normalisation
PARAMS |= {"bn_stats": 6, "bn_forward": 12, "bn_backward_sums": 12, "bn_backward_input": 13}
# max pooling
PARAMS |= {"max_pool": 13, "max_pool_backward": 16}
# the LSTM cell
PARAMS |= {"lstm_cell": 5, "lstm_cell_backward": 10}


@pytest.fixture
def stand_in(monkeypatch, tmp_path_factory):
    return recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("hot_kernels"))


@pytest.fixture
def ref():
    import backprop_gpu as bg

    return ArrayNamespace(bg.get_backend("numpy"))


def _host(a):
    return recording_cupy.to_host(a)


# --- NVRTC ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ptx():
    """The module's PTX, compiled once for the tests that read it (skips without NVRTC)."""
    return nvrtc_ptx(_nvrtc(), cuda.SOURCE, "bpg_hot_kernels.cu")


def test_source_compiles_with_nvrtc_and_entries_take_what_is_passed(ptx):
    assert "--std=c++14" in NVRTC_OPTIONS and cuda.OPTIONS == ("--std=c++14",)
    for kernel, n in PARAMS.items():
        for dtype in DTYPES:
            name = cuda.kernel_name(kernel, dtype)
            assert f".visible .entry {name}(" in ptx, name
            assert len(re.findall(rf"\.param \.\w+ {name}_param_\d+", ptx)) == n, name
    assert len(re.findall(r"\.visible \.entry", ptx)) == len(PARAMS) * len(DTYPES)


def test_float32_kernels_stay_in_float():
    # the double accumulators are the column sums' and the loss total's, by design; no other double
    body = cuda.BODY.split("BPG_KERNELS(float")[0]
    assert set(re.findall(r"\bdouble \w+", body)) == {"double acc", "double total"}


def test_float32_row_kernels_stay_in_float(ptx):
    # doubles only for LayerNorm's column sums (the scratch parts and their total); rows reduce in T
    body = cuda.ROWS_BODY.split("BPG_ROW_KERNELS(float")[0]
    assert set(re.findall(r"\bdouble\b[ *]*\w+", body)) == {"double *pw", "double *pb", "double acc_w"}
    for kernel in ("softmax", "softmax_backward", "layer_norm"):
        entry = ptx.split(f".entry {cuda.kernel_name(kernel, 'float32')}(")[1].split(".entry")[0]
        assert ".f64" not in entry, kernel



def test_float32_gelu_and_scatter_kernels_stay_in_float(ptx):
    for kernel in ("gelu", "gelu_backward", "scatter_add_rows"):
        entry = ptx.split(f".entry {cuda.kernel_name(kernel, 'float32')}(")[1].split(".entry")[0]
        assert ".f64" not in entry, kernel
    assert "atom.global.add.f32" in ptx.split(f".entry {cuda.kernel_name('scatter_add_rows', 'float32')}(")[1]

# --- the host build through the namespace -----------------------------------------------------

def _assert_gradients_close(got, want, rtol, what):
    """Each gradient of ``got`` (device) as ``want``'s (None where it is None), within ``rtol`` and an
    absolute ``rtol`` times the gradient's scale."""
    for k, (a, r) in enumerate(zip(got, want)):
        if r is None:
            assert a is None, (what, k)
            continue
        scale = max(float(np.abs(r).max()), 1.0)
        np.testing.assert_allclose(_host(a), r, rtol=rtol, atol=rtol * scale, err_msg=f"{what} gradient {k}")


def _rand(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_kernels_match_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    assert type(F) is cuda.CudaNamespace
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (2, 3, 4), (6,), (1, 1)]:
        y, b, g = _rand(rng, dtype, *shape), _rand(rng, dtype, shape[-1]), _rand(rng, dtype, *shape)
        y.reshape(-1)[0] = np.nan  # NaN propagates, as NumPy's maximum
        for bias in (b, None):
            dy = xp.asarray(y)
            with rec.count() as c:
                out = F.bias_relu_(dy, None if bias is None else xp.asarray(bias))
            assert out is dy and c.launches == 1, c.table()
            want = ref.bias_relu_(y.copy(), bias)
            np.testing.assert_array_equal(_host(out), want)
        o = ref.bias_relu_(y.copy(), b)
        dg, do = xp.asarray(g), xp.asarray(o)
        for scale in (1.0, 1 / 0.7):  # 1 / (1 - p) after a fused dropout
            with rec.count() as c:
                gm = F.relu_backward(dg, do, scale)
                gm2, cs = F.relu_backward_colsum(dg, do, scale)
            assert c.launches == 2, c.table()
            np.testing.assert_array_equal(_host(gm), ref.relu_backward(g, o, scale))
            gm_ref, cs_ref = ref.relu_backward_colsum(g, o, scale)
            np.testing.assert_array_equal(_host(gm2), gm_ref)
            np.testing.assert_allclose(_host(cs), cs_ref, rtol=SUM_RTOL[dtype], atol=0)
            slot = xp.empty(shape[-1:], dtype)
            with rec.count() as c:
                _, into = F.relu_backward_colsum_into(dg, do, slot, scale)
            assert into is slot and c.launches == 1, c.table()
            np.testing.assert_allclose(_host(slot), cs_ref, rtol=SUM_RTOL[dtype], atol=0)



@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # inf inputs
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_kernels_match_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    x = np.concatenate([np.linspace(-12, 12, 97), [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(dtype).reshape(2, -1)
    g = _rand(np.random.default_rng(2), dtype, *x.shape)
    atol = {"float32": 4e-6, "float64": 1e-14}[dtype]  # erfc against 1 + erf, libm against NumPy/SciPy
    for approximate in ("none", "tanh"):
        dx, dg = xp.asarray(x), xp.asarray(g)
        with rec.count() as c:
            y = F.gelu_forward(dx, approximate)
            gx = F.gelu_backward(dg, dx, approximate)
        assert c.launches == 2 and c.h2d == 0 and c.syncs == 0, c.table()
        for got, want in ((y, ref.gelu_forward(x, approximate)), (gx, ref.gelu_backward(g, x, approximate))):
            assert got.dtype == x.dtype
            np.testing.assert_allclose(_host(got), want, rtol=atol / 12, atol=atol, err_msg=approximate)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_one_launch_each_way_and_matches_reference(stand_in, dtype):
    """The fused Philox dropout (array/rng/cuda_source.DROPOUT) draws the reference's mask at the same
    offset, bit for bit, scales as it does, and leaves the generator where the reference leaves it."""
    import backprop_gpu as bg

    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    host = bg.get_backend("numpy")
    rng = np.random.default_rng(3)
    for shape, p in (((7, 143), 0.3), ((5,), 0.9), ((1,), 0.5)):
        x, g = _rand(rng, dtype, *shape), _rand(rng, dtype, *shape)
        x.reshape(-1)[0] = np.nan  # NaN stays NaN where kept, as x * mask does
        for b in (cupy, host):
            b.manual_seed(11)
            b.generator.offset = 5
        keep, keep_ref = xp.empty(shape, np.bool_), np.empty(shape, np.bool_)
        dx, dg = xp.asarray(x), xp.asarray(g)
        with rec.count() as c:
            y = F.dropout_(dx, p, keep)
            gx = F.dropout_backward(dg, keep, p)
        assert (c.launches, c.h2d, c.syncs) == (2, 0, 0), c.table()
        y_ref = host.F.dropout_(x, p, keep_ref)
        np.testing.assert_array_equal(_host(keep), keep_ref)
        np.testing.assert_array_equal(_host(y), y_ref)
        np.testing.assert_array_equal(_host(gx), host.F.dropout_backward(g, keep_ref, p))
        assert _host(y).dtype == _host(gx).dtype == x.dtype
        assert cupy.generator.offset == host.generator.offset > 5


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_dropout_is_one_launch_and_matches_reference(stand_in, dtype):
    """Bias, ReLU and dropout in one Philox launch, in place: the reference's values bit for bit (its
    mask drawn at the same offset), and the generator left where the reference leaves it."""
    import backprop_gpu as bg

    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    host = bg.get_backend("numpy")
    rng = np.random.default_rng(4)
    for shape, p in (((7, 143), 0.3), ((3, 2, 5), 0.9), ((1,), 0.5)):
        y, b = _rand(rng, dtype, *shape), _rand(rng, dtype, shape[-1])
        y.reshape(-1)[0] = np.nan  # NaN stays NaN where kept, and times 0 where dropped, as the reference
        for bias in (b, None):
            for bk in (cupy, host):
                bk.manual_seed(11)
                bk.generator.offset = 5
            dy, db = xp.asarray(y), None if bias is None else xp.asarray(bias)
            with rec.count() as c:
                out = F.bias_relu_dropout_(dy, db, p)
            assert out is dy and (c.launches, c.h2d, c.syncs) == (1, 0, 0), c.table()
            want = host.F.bias_relu_dropout_(y.copy(), bias, p)
            np.testing.assert_array_equal(_host(out), want)
            assert 0 < int((want != 0).sum()) < want.size or want.size == 1
            assert cupy.generator.offset == host.generator.offset > 5


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_cell_kernels_match_reference(stand_in, ref, dtype):
    """One LSTM step and its gradient: one launch each (one more for the copy of a strided previous
    cell state), the reference's values to libm's exp/tanh against NumPy's, saturated gates included."""
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    B, H = 5, 7
    rng = np.random.default_rng(9)
    a = (_rand(rng, dtype, B, 4 * H) * 4).astype(dtype)
    a[0, :3] = [60.0, -60.0, 30.0]
    prev = _rand(rng, dtype, B, 6 * H)
    g, dh, dc = _rand(rng, dtype, B, 6 * H), _rand(rng, dtype, B, H), _rand(rng, dtype, B, H)
    rtol = CE_RTOL[dtype]
    out_ref = ref.lstm_cell_(a.copy(), prev[:, H:2 * H], np.empty((B, 6 * H), dtype))
    dprev = xp.asarray(prev)
    for c, copies in ((dprev[:, H:2 * H], 1), (xp.asarray(np.ascontiguousarray(prev[:, H:2 * H])), 0)):
        da_, out = xp.asarray(a), xp.empty((B, 6 * H), dtype)
        with rec.count() as cnt:
            F.lstm_cell_(da_, c, out)
        assert (cnt.launches, cnt.syncs, cnt.h2d) == (1 + copies, 0, 0), cnt.table()
        np.testing.assert_allclose(_host(out), out_ref, rtol=rtol, atol=rtol)
    dg, dout = xp.asarray(g), xp.asarray(out_ref)
    for rec_in in ((dh, dc), (None, None)):
        d_rec = [None if v is None else xp.asarray(v) for v in rec_in]
        with rec.count() as cnt:
            da, dcp = F.lstm_cell_backward(dg, *d_rec, dout, dprev[:, H:2 * H])
        assert (cnt.syncs, cnt.h2d) == (0, 0) and cnt.launches <= 2, cnt.table()  # the copy and the kernel
        want = ref.lstm_cell_backward(g, *rec_in, out_ref, prev[:, H:2 * H])
        for got, w in zip((da, dcp), want):
            np.testing.assert_allclose(_host(got), w, rtol=rtol, atol=rtol * float(np.abs(w).max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_add_rows_matches_reference(stand_in, ref, dtype):
    """An Embedding's gradient: the zeros and one scatter-add launch; repeated and negative indices
    accumulate as the reference's (np.add.at) do."""
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(4)
    for idx_shape, row in (((13,), (4,)), ((3, 5), (2, 3)), ((6,), ())):
        idx = rng.integers(-7, 7, idx_shape)
        idx.reshape(-1)[:2] = 3  # a repeat
        g = _rand(rng, dtype, *idx_shape, *row)
        di, dg = xp.asarray(idx), xp.asarray(g)
        with rec.count() as c:
            out = F.index_backward(dg, (7,) + row, di)
        assert c.launches == 2 and c.h2d == 0 and c.syncs == 0, c.table()  # zeros, the scatter
        np.testing.assert_allclose(_host(out), ref.index_backward(g, (7,) + row, idx),
                                   rtol=SUM_RTOL[dtype], atol=SUM_RTOL[dtype])

def _ce_cases(rng, dtype):
    """(label, logits, targets, ignore_index)"""
    yield "plain", _rand(rng, dtype, 9, 5), rng.integers(0, 5, 9), -100
    t = rng.integers(0, 4, 7)
    t[[1, 4]] = 2
    yield "ignored rows", _rand(rng, dtype, 7, 4), t, 2
    yield "all rows ignored", _rand(rng, dtype, 3, 4), np.full(3, -100), -100
    yield "one class", _rand(rng, dtype, 4, 1), np.zeros(4, np.int64), -100
    yield "many classes, a warp's worth and more", _rand(rng, dtype, 5, 70), rng.integers(0, 70, 5), -100
    x = _rand(rng, dtype, 4, 3) * 1000  # exp would overflow without the max subtracted
    yield "huge logits", x, rng.integers(0, 3, 4), -100
    x = _rand(rng, dtype, 4, 3)
    x[2, 1] = np.nan
    yield "a NaN logit", x, np.array([0, 1, 1, 2]), -100
    yield "no rows", np.zeros((0, 3), dtype), np.zeros(0, np.int64), -100


def _close(a, b, dtype, what):
    scale = max(float(np.nanmax(np.abs(b))) if np.size(b) and not np.all(np.isnan(b)) else 0.0, 1.0)
    np.testing.assert_allclose(a, b, rtol=CE_RTOL[dtype], atol=CE_RTOL[dtype] * scale, err_msg=what)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_kernels_match_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(1)
    for label, x, t, ignore in _ce_cases(rng, dtype):
        n = x.shape[0]
        counted = int(np.count_nonzero(t != ignore))
        for ls in (0.0, 0.1):
            for reduction in ("none", "sum", "mean"):
                what = f"{label}, ls={ls}, {reduction}"
                dx, dt = xp.asarray(x), xp.asarray(t)
                count, bad = xp.empty((), dtype), xp.empty((), np.bool_)
                with rec.count() as c:
                    loss = F.cross_entropy_forward(dx, dt, ignore, ls, reduction, count, (count, bad))
                assert c.launches == 1 and c.syncs == 0 and c.h2d == 0, what + c.table()
                rcount, rbad = np.empty((), dtype), np.empty((), np.bool_)
                want = ref.cross_entropy_forward(x, t, ignore, ls, reduction, rcount, (rcount, rbad))
                assert loss.shape == np.shape(want) and loss.dtype == dtype, what
                _close(_host(loss), want, dtype, what)
                assert _host(count) == counted == rcount and not _host(bad) and not rbad, what
                # the divisor known on the host (a host target): the same loss
                host_count = counted if counted else float("nan")
                _close(_host(F.cross_entropy_forward(dx, dt, ignore, ls, reduction, host_count)),
                       ref.cross_entropy_forward(x, t, ignore, ls, reduction, host_count), dtype, what + ", host count")
                g = _rand(rng, dtype, n) if reduction == "none" else np.asarray(rng.standard_normal(), dtype)
                for div in (count, host_count):
                    with rec.count() as c:
                        gx = F.cross_entropy_backward(xp.asarray(g), dx, dt, ignore, ls, reduction, div)
                    assert c.launches == 1 and c.syncs == 0 and c.h2d == 1, what + c.table()  # h2d: g
                    rdiv = rcount if div is count else host_count
                    want = ref.cross_entropy_backward(g, x, t, ignore, ls, reduction, rdiv)
                    _close(_host(gx), want, dtype, what + " backward")


@pytest.mark.parametrize("bad_target", [5, -1])
def test_cross_entropy_forward_flags_out_of_range_targets_without_reading_them(stand_in, ref, bad_target):
    _, cupy = stand_in
    xp = cupy.xp
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    t = np.array([0, bad_target, 4, -100])
    count, bad = xp.empty((), np.float32), xp.empty((), np.bool_)
    loss = cupy.F.cross_entropy_forward(xp.asarray(x), xp.asarray(t), -100, 0.0, "none", count, (count, bad))
    rcount, rbad = np.empty((), np.float32), np.empty((), np.bool_)
    want = ref.cross_entropy_forward(x, t, -100, 0.0, "none", rcount, (rcount, rbad))
    assert bool(_host(bad)) and bool(rbad) and _host(count) == rcount == 3
    keep = [0, 2, 3]  # the bad row's loss is meaningless (it reads class 0), the others stand
    _close(_host(loss)[keep], want[keep], "float32", "rows with valid targets")


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_target_stats_matches_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    xp = cupy.xp
    rng = np.random.default_rng(5)
    cases = [("in range", rng.integers(0, 6, 300), -100), ("ignored", np.array([1, 2, 2, 0, 2]), 2),
             ("all ignored", np.full(4, 3), 3), ("above", np.array([0, 6, 1]), -100),
             ("negative", np.array([0, -1, -100]), -100), ("empty", np.zeros(0, np.int64), -100),
             ("int32, huge", np.array([0, 5, 2**31 - 1], np.int32), -100)]
    for label, t, ignore in cases:
        count, bad = xp.empty((), dtype), xp.empty((), np.bool_)
        with rec.count() as c:
            cupy.F.class_target_stats(xp.asarray(t), 6, ignore, count, bad)
        assert c.launches == (1 if t.dtype == np.int64 else 2), label + c.table()  # + the int64 cast
        rcount, rbad = np.empty((), dtype), np.empty((), np.bool_)
        ref.class_target_stats(t, 6, ignore, rcount, rbad)
        assert (_host(count), bool(_host(bad))) == (rcount, bool(rbad)), label


def test_kernels_hand_other_arrays_to_the_reference(stand_in, ref):
    rec, cupy = stand_in
    xp = cupy.xp
    x = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float16)
    t = np.array([0, 1, 2, 3, 0, 1], np.int32)
    with rec.count() as c:
        loss = cupy.F.cross_entropy_forward(xp.asarray(x), xp.asarray(t), -100, 0.0, "sum", 6)
    assert not any("RawKernel" in what for (_, _, what) in c.events), c.table()  # float16: the reference
    np.testing.assert_array_equal(_host(loss), ref.cross_entropy_forward(x, t, -100, 0.0, "sum", 6))
    g = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    o = np.abs(g.T.copy())
    res = cupy.F.relu_backward(xp.asarray(g).T, xp.asarray(o))  # a transposed operand
    np.testing.assert_array_equal(_host(res), ref.relu_backward(g.T, o))
    ti = xp.asarray(t)  # int32 targets: cast to int64 for the kernel (one launch more)
    x32 = xp.asarray(x.astype(np.float32))
    with rec.count() as c:
        cupy.F.cross_entropy_forward(x32, ti, -100, 0.0, "sum", 6)
    assert c.launches == 2, c.table()


def test_module_is_compiled_once_per_device(monkeypatch, tmp_path_factory):
    import backprop_gpu as bg
    from backprop_gpu.array import registry

    rec, cupy0 = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("two_devices"), n_devices=2)
    cupy1 = registry.get_backend("cuda:1")
    for b in (cupy0, cupy1):
        x = bg.tensor(np.ones((2, 3), np.float32), device=b)
        for _ in range(2):
            b.F.bias_relu_(x.array, None)
            b.F.relu_backward(x.array, x.array)
        F = b.F
        assert list(F._modules) == [b.arrays.cuda_device.id]
        assert sorted(k[1] for k in F._functions) == ["bpg_relu_backward_f32", "bpg_relu_f32"]


# --- softmax and LayerNorm over rows ------------------------------------------------------------

def _row_cases(rng, dtype):
    """(label, (rows, cols) values): odd sizes, a warp's worth and more, a block's worth and more,
    huge values, a NaN, an all -inf row (NaN, as NumPy and PyTorch)."""
    for shape in [(1, 1), (4, 1), (5, 3), (3, 70), (2, 1000), (33, 17)]:
        yield f"{shape}", _rand(rng, dtype, *shape) * 3
    yield "huge", _rand(rng, dtype, 4, 5) * 1000
    x = _rand(rng, dtype, 3, 6)
    x[1, 2] = np.nan
    x[2] = -np.inf
    yield "NaN and -inf rows", x
    yield "no rows", np.zeros((0, 4), dtype)


def _row_close(a, b, dtype, what):
    finite = np.isfinite(b)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
    scale = max(float(np.abs(b[finite]).max()) if finite.any() else 0.0, 1.0)
    np.testing.assert_allclose(a[finite], b[finite], rtol=CE_RTOL[dtype], atol=CE_RTOL[dtype] * scale, err_msg=what)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_kernels_match_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(7)
    for label, x in _row_cases(rng, dtype):
        g = _rand(rng, dtype, *x.shape)
        for kind in ("softmax", "log_softmax"):
            what = f"{kind} {label}"
            with rec.count() as c:
                y = getattr(F, kind + "_forward")(xp.asarray(x))
            assert c.launches == (1 if x.size else 0) and c.syncs == 0 and c.h2d == 1, what + c.table()
            want = getattr(ref, kind + "_forward")(x)
            _row_close(_host(y), want, dtype, what)
            dg, dy = xp.asarray(g), xp.asarray(want)
            with rec.count() as c:
                gx = getattr(F, kind + "_backward")(dg, dy)
            assert c.launches == (1 if x.size else 0) and c.syncs == 0, what + c.table()
            _row_close(_host(gx), getattr(ref, kind + "_backward")(g, want), dtype, what + " backward")


LN_RTOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_kernels_match_reference(stand_in, ref, dtype):
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(8)
    for shape in [(1, 1), (4, 1), (5, 3), (3, 70), (2, 1000), (300, 17)]:
        x = _rand(rng, dtype, *shape) * 3 + 10  # a mean far from zero
        g, w, b = _rand(rng, dtype, *shape), _rand(rng, dtype, shape[1]), _rand(rng, dtype, shape[1])
        dx, dg = xp.asarray(x), xp.asarray(g)
        for wb in ((w, b), (None, None), (w, None), (None, b)):
            what = f"{shape}, weight {wb[0] is not None}, bias {wb[1] is not None}"
            dwb = [None if a is None else xp.asarray(a) for a in wb]
            mean, rstd = xp.empty(shape[0], dtype), xp.empty(shape[0], dtype)
            with rec.count() as c:
                y = F.layer_norm_forward(dx, *dwb, 1e-5, mean, rstd)
            assert c.launches == 1 and c.syncs == 0 and c.h2d == 0, what + c.table()
            rmean, rrstd = np.empty(shape[0], dtype), np.empty(shape[0], dtype)
            tol = dict(rtol=LN_RTOL[dtype], atol=LN_RTOL[dtype])
            want = ref.layer_norm_forward(x, *wb, 1e-5, rmean, rrstd)
            np.testing.assert_allclose(_host(y), want, err_msg=what, **tol)
            np.testing.assert_allclose(_host(mean), rmean, err_msg=what, **tol)
            np.testing.assert_allclose(_host(rstd), rrstd, err_msg=what, **tol)
            for needs in ((True, True, True), (True, False, False), (False, True, True), (False, False, True)):
                with rec.count() as c:
                    got = F.layer_norm_backward(dg, dx, mean, rstd, dwb[0], needs)
                # the input's gradient in one launch, the column sums in one more
                assert c.launches == (2 if needs[1] or needs[2] else 1) and c.syncs == 0 and c.h2d == 0, \
                    what + str(needs) + c.table()
                want = ref.layer_norm_backward(g, x, rmean, rrstd, wb[0], needs)
                _assert_gradients_close(got, want, LN_RTOL[dtype], f"{what} {needs}")


def test_float32_batch_norm_passes_stay_in_float(ptx):
    # the per-channel sums accumulate in double by design; the per-element passes compute in float
    # (the input's gradient only loads the double sums and rounds them to float, per element)
    def entry(kernel):
        return ptx.split(f".entry {cuda.kernel_name(kernel, 'float32')}(")[1].split(".entry")[0]
    assert ".f64" not in entry("bn_forward")
    assert not re.findall(r"\b(?:add|sub|mul|div|fma)\.\w*\.?f64", entry("bn_backward_input"))


BN_RTOL = {"float32": 2e-5, "float64": 1e-12}


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_kernels_match_reference(stand_in, ref, dtype):
    """Statistics, the affine pass (with the fused ReLU) and the backward (masked by the ReLU's output
    or not) against the reference, for (N, C) and (N, C, H, W) data with and without weight and bias:
    one launch each, two for the backward with the input's gradient, no sync, no copy."""
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(9)
    for shape in [(1, 1), (5, 3), (4, 2, 3, 3), (2, 7, 1, 5), (64, 4)]:
        x = _rand(rng, dtype, *shape) * 2 + 5  # a mean far from zero
        g = _rand(rng, dtype, *shape)
        c_ = shape[1]
        w, b = _rand(rng, dtype, c_), _rand(rng, dtype, c_)
        dx, dg = xp.asarray(x), xp.asarray(g)
        with rec.count() as c:
            mean, var = F.batch_norm_stats(dx)
        assert c.launches == 1 and c.syncs == 0 and c.h2d == 0, c.table()
        rmean, rvar = ref.batch_norm_stats(x)
        tol = dict(rtol=BN_RTOL[dtype], atol=BN_RTOL[dtype])
        np.testing.assert_allclose(_host(mean), rmean, **tol)
        np.testing.assert_allclose(_host(var), rvar, **tol)
        invstd = (1 / np.sqrt(rvar + 1e-5)).astype(dtype)
        dmean, dinv = xp.asarray(rmean), xp.asarray(invstd)
        for wb in ((w, b), (None, None), (w, None), (None, b)):
            dwb = [None if a is None else xp.asarray(a) for a in wb]
            for relu in (False, True):
                what = f"{shape}, weight {wb[0] is not None}, bias {wb[1] is not None}, relu {relu}"
                with rec.count() as c:
                    y = F.batch_norm_forward(dx, dmean, dinv, *dwb, relu=relu)
                assert c.launches == 1 and c.syncs == 0 and c.h2d == 0, what + c.table()
                want = ref.batch_norm_forward(x, rmean, invstd, *wb, relu=relu)
                np.testing.assert_allclose(_host(y), want, err_msg=what, rtol=BN_RTOL[dtype],
                                           atol=BN_RTOL[dtype] * max(float(np.abs(want).max()), 1.0))
                out, rout = (y, want) if relu else (None, None)
                for needs in ((True, True, True), (False, True, True)):
                    with rec.count() as c:
                        got = F.batch_norm_backward(dg, dx, dmean, dinv, dwb[0], needs, out=out)
                    assert c.launches == (2 if needs[0] else 1) and c.syncs == 0 and c.h2d == 0, \
                        what + str(needs) + c.table()
                    want = ref.batch_norm_backward(g, x, rmean, invstd, wb[0], needs, out=rout)
                    _assert_gradients_close(got, want, BN_RTOL[dtype], f"{what} {needs}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_kernels_match_reference(stand_in, ref, dtype):
    """Forward, backward (overlapping windows summed, ties to the first maximum, NaN as the maximum,
    padding) and the gather against the reference: one launch each (the backward's zeros one more)."""
    rec, cupy = stand_in
    F, xp = cupy.F, cupy.xp
    rng = np.random.default_rng(10)
    cases = [((2, 3, 6, 6), (2, 2), (2, 2), (0, 0)), ((1, 2, 5, 7), (3, 3), (1, 1), (1, 1)),
             ((2, 1, 7, 5), (3, 2), (2, 1), (1, 0)), ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0))]
    for shape, kernel, stride, padding in cases:
        x = np.round(_rand(rng, dtype, *shape) * 2) / 2  # ties inside windows
        x.reshape(-1)[x.size // 2] = np.nan
        what = f"{shape} kernel {kernel} stride {stride} padding {padding}"
        dx = xp.asarray(x)
        with rec.count() as c:
            out = F.max_pool2d(dx, kernel, stride, padding)
        assert c.launches == 1 and c.syncs == 0 and c.h2d == 0, what + c.table()
        want = ref.max_pool2d(x, kernel, stride, padding)
        np.testing.assert_array_equal(_host(out), want, err_msg=what)
        g = _rand(rng, dtype, *want.shape)
        dg = xp.asarray(g)
        with rec.count() as c:
            gx = F.max_pool2d_backward(dg, dx, out, kernel, stride, padding)
        assert c.launches == 2 and c.syncs == 0 and c.h2d == 0, what + c.table()
        np.testing.assert_allclose(_host(gx), ref.max_pool2d_backward(g, x, want, kernel, stride, padding),
                                   rtol=SUM_RTOL[dtype], atol=SUM_RTOL[dtype], err_msg=what)
        gin = _rand(rng, dtype, *shape)
        dgin = xp.asarray(gin)
        with rec.count() as c:
            res = F.max_pool2d_gather(dgin, dx, out, kernel, stride, padding)
        assert c.launches == 1, what + c.table()
        np.testing.assert_array_equal(_host(res), ref.max_pool2d_gather(gin, x, want, kernel, stride, padding),
                                      err_msg=what)
