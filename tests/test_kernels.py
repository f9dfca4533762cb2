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
from backprop_gpu.backends import numba_kernels
from backprop_gpu.ops.array_namespace import ArrayNamespace


def reference(backend):
    """The reference kernels on ``backend``'s own arrays."""
    return ArrayNamespace(bg.get_backend(backend))


@pytest.fixture(params=["serial", "parallel"])
def size_path(request, monkeypatch):
    """Run each numba kernel through its serial and its parallel compilation."""
    if request.param == "parallel":
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
    b = bg.get_backend(backend)
    g, out = _arrays(backend, dtype, (9, 11), (9, 11))
    out = b.F.bias_relu_(out, None)
    res = b.F.relu_backward(g, out)
    np.testing.assert_array_equal(b.to_host(res), b.to_host(reference(backend).relu_backward(g, out)))
    assert res is not g and res.dtype == g.dtype


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
