"""The tape: higher-order gradients, grad modes, accumulation, graph lifetime, versions, anomalies,
dtypes, devices, and the errors users get."""
import logging

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu.autograd import GraphFreedError


def x64(backend, v, grad=True):
    return bg.tensor(np.asarray(v, dtype=np.float64), device=backend, requires_grad=grad)


def test_apples_and_tax():
    price, count, tax = (bg.tensor(v, requires_grad=True) for v in (10.0, 2.0, 0.1))
    total = price * count * (1 + tax)
    total.backward()
    assert total.item() == pytest.approx(22.0)
    assert price.grad.item() == pytest.approx(2.2)
    assert count.grad.item() == pytest.approx(11.0)
    assert tax.grad.item() == pytest.approx(20.0)


def test_second_and_third_derivatives(backend):
    x = x64(backend, [0.5, -1.5, 2.0])
    (d1,) = bg.grad((x ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(d1.numpy(), 3 * x.numpy() ** 2)
    (d2,) = bg.grad(d1.sum(), x, create_graph=True)
    np.testing.assert_allclose(d2.numpy(), 6 * x.numpy())
    (d3,) = bg.grad(d2.sum(), x)
    np.testing.assert_allclose(d3.numpy(), [6, 6, 6])


@pytest.mark.parametrize("fn,second", [
    (bg.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    (bg.sigmoid, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s)),
    (bg.exp, np.exp),
    (lambda x: bg.log(x * x + 1), lambda x: (2 - 2 * x ** 2) / (x ** 2 + 1) ** 2),
])
def test_second_derivatives_of_elementwise_ops(backend, fn, second):
    x = x64(backend, [0.3, -0.7, 1.2])
    (g,) = bg.grad(fn(x).sum(), x, create_graph=True)
    (gg,) = bg.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), second(x.numpy()), rtol=1e-10)


def test_gradcheck_of_a_gradient_function(backend):
    """The create_graph backward of matmul, softmax, gelu, reductions and broadcasting is itself correct."""
    rng = np.random.default_rng(0)
    w = x64(backend, rng.standard_normal((3, 4)))
    b = x64(backend, rng.standard_normal(4))

    def grad_of_loss(w, b):
        x = bg.tensor(rng.standard_normal((2, 3)), device=backend)
        h = bg.gelu(x @ w + b)
        loss = (bg.softmax(h, axis=1) * h).sum() + h.max(axis=0).sum() + bg.logsumexp(h, axis=1).mean()
        gw, gb = bg.grad(loss, [w, b], create_graph=True)
        return (gw * gw).sum() + gb.sum()

    rng_state = rng.bit_generator.state
    def fixed(w, b):
        rng.bit_generator.state = rng_state
        return grad_of_loss(w, b)
    assert bg.gradcheck(fixed, [w, b], atol=1e-5, rtol=1e-4)


def test_backward_with_create_graph_then_double_backward(backend):
    x = x64(backend, [1.0, 2.0])
    y = (x ** 2).sum()
    y.backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    x.grad = None
    (g * g).sum().backward()  # d/dx sum((2x)^2) = 8x
    np.testing.assert_allclose(x.grad.numpy(), [8.0, 16.0])


def test_grad_returns_without_accumulating(backend):
    x, y = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0])
    gx, gy = bg.grad((x * y).sum(), [x, y])
    np.testing.assert_allclose(gx.numpy(), [3, 4])
    np.testing.assert_allclose(gy.numpy(), [1, 2])
    assert x.grad is None and y.grad is None
    z = x64(backend, [1.0])
    with pytest.raises(RuntimeError, match="not used in the graph"):
        bg.grad((x * 2).sum(), [x, z])
    assert bg.grad((x * 2).sum(), [x, z], allow_unused=True)[1] is None


def test_grad_wrt_an_intermediate(backend):
    x = x64(backend, [1.0, 2.0])
    h = x * 3
    (gh,) = bg.grad((h * h).sum(), h)
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())


def test_gradients_accumulate_across_backward_calls(backend):
    x = x64(backend, [1.0, 2.0])
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 7.0])


def test_graph_is_freed_unless_retained(backend):
    x = x64(backend, [1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp([1, 2]) * (1 + np.array([1, 2]))))
    with pytest.raises(GraphFreedError, match="second time"):
        y.backward()


def test_deep_graph_has_no_recursion_limit(backend):
    x = x64(backend, [1.0])
    y = x
    for _ in range(20000):
        y = y + 1.0
    y = y * 2
    y.sum().backward()
    assert x.grad.item() == 2.0 and y.item() == 2 * 20001


def test_no_grad_enable_grad_and_detach(backend):
    x = x64(backend, [1.0, 2.0])
    with bg.no_grad():
        y = x * 2
        with bg.enable_grad():
            z = x * 3
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf

    @bg.no_grad()
    def f(t):
        return t * 5
    assert not f(x).requires_grad and bg.is_grad_enabled()


def test_requires_grad_rules():
    t = bg.tensor([1, 2, 3])
    assert t.dtype == np.int64
    with pytest.raises(TypeError, match="only floating-point tensors can require grad, got dtype int64"):
        t.requires_grad_()
    y = bg.tensor([1.0]).requires_grad_() * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_inplace_change_of_a_saved_tensor_is_detected(backend):
    x = x64(backend, [1.0, 2.0])
    w = x64(backend, [3.0, 4.0], grad=False)
    y = (x * w).sum()
    w += 1  # Mul saved w for x's gradient
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation.*version is 1, expected 0"):
        y.backward()
    e = x.exp()
    with bg.no_grad():
        e.mul_(2)  # exp's VJP reads its output
    with pytest.raises(RuntimeError, match="in-place"):
        e.sum().backward()


def test_inplace_on_a_leaf_requiring_grad_is_refused_in_grad_mode(backend):
    x = x64(backend, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="in-place change of a leaf tensor that requires grad"):
        x.add_(1)
    with bg.no_grad():
        x.add_(1)
    np.testing.assert_allclose(x.numpy(), [2.0, 3.0])


def test_augmented_assignment_with_grad_keeps_the_graph(backend):
    x = x64(backend, [1.0, 2.0])
    total = bg.zeros(2, dtype="float64", device=backend)
    for k in range(3):
        total += x * k
    total.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_anomaly_mode_names_the_op(backend):
    x = x64(backend, [1.0, -1.0])
    with bg.detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError, match=r"op log .*1 NaN"):
            bg.log(x)
        y = bg.sqrt(x64(backend, [0.0, 1.0]))
        with pytest.raises(FloatingPointError, match="gradient of sqrt"):
            y.sum().backward()
    with np.errstate(all="ignore"):
        assert np.isnan(bg.log(x).numpy()[1])  # off again: no error


def test_backward_on_non_scalar_needs_a_gradient(backend):
    x = x64(backend, [1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"only for scalar outputs; this tensor has shape \(2,\)"):
        (x * 2).backward()
    (x * 2).backward(gradient=bg.tensor([1.0, 10.0], dtype="float64", device=backend))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 20.0])
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\)"):
        (x * 2).backward(gradient=np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        bg.tensor([1.0]).backward()


def test_shape_mismatch_errors_name_the_shapes(backend):
    a = bg.zeros(2, 3, device=backend)
    b = bg.zeros(4, device=backend)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"matmul shape mismatch: \(2, 3\) @ \(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        a.reshape(4, 2)


def test_dtype_rules(backend):
    assert bg.tensor([1.0, 2.0], device=backend).dtype == np.float32
    assert bg.tensor(3.5, device=backend).dtype == np.float32
    assert bg.tensor(np.zeros(2), device=backend).dtype == np.float64
    x32 = bg.tensor([1.0], device=backend, requires_grad=True)
    y = x32 * 2.0 + 1 - 0.5
    assert y.dtype == np.float32
    y.backward()
    assert x32.grad.dtype == np.float32
    x64_ = bg.tensor(np.ones(2), device=backend, requires_grad=True)
    (bg.exp(x64_) * 3.0).sum().backward()
    assert x64_.grad.dtype == np.float64


def test_tensor_basics(backend):
    t = bg.tensor(np.arange(6.0).reshape(2, 3), device=backend, requires_grad=True)
    host = t.numpy()
    host[0, 0] = 99
    assert t.numpy()[0, 0] == 0  # a copy, even for a tensor that requires grad
    assert t.shape == (2, 3) and len(t) == 2 and t.ndim == 2 and t.size == 6
    assert t.T.shape == (3, 2)
    assert t[1, 2].item() == 5.0
    assert str(t.device) in ("cpu", "cuda:0")
    assert "requires_grad=True" in repr(t)
    src = np.ones(3)
    t2 = bg.tensor(src, device=backend)
    src[0] = 5
    assert t2.numpy()[0] == 1  # bg.tensor copies its input


def test_factories_are_seeded(backend):
    bg.manual_seed(7)
    a = bg.randn(3, 2, device=backend).numpy()
    bg.manual_seed(7)
    b = bg.randn(3, 2, device=backend).numpy()
    np.testing.assert_array_equal(a, b)
    assert bg.zeros(2, 3, device=backend).shape == (2, 3)
    assert bg.arange(5, device=backend).tolist() == [0, 1, 2, 3, 4]
    assert bg.ones((2,), device=backend, dtype="float64").dtype == np.float64


def test_transfer_between_backends_is_differentiable():
    x = bg.tensor([1.0, 2.0], device="numpy", requires_grad=True)
    y = x.to("numba-cuda") if "numba-cuda" in bg.available_backends() else x.to("numba")
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert x.to("numpy") is x and x.cpu() is x


@pytest.mark.skipif("numba-cuda" not in bg.available_backends(), reason="needs the numba-cuda backend or simulator")
def test_mixing_devices_is_an_error():
    a = bg.tensor([1.0], device="cpu")
    b = bg.tensor([1.0], device="numba-cuda")
    with pytest.raises(bg.DeviceMismatchError, match=r"different devices.*cpu.*cuda:0"):
        a + b
    with pytest.raises(bg.DeviceMismatchError):
        bg.concatenate([a, b])
    assert (a + b.cpu()).item() == 2.0


def test_missing_gpu_is_a_clear_error():
    if "cupy" in bg.available_backends():
        pytest.skip("a GPU is present")
    with pytest.raises(bg.BackendUnavailableError, match="cupy.*(not installed|no CUDA driver or GPU)"):
        bg.zeros(2, device="cuda")
    with pytest.raises(bg.BackendUnavailableError):
        bg.tensor([1.0], device="cuda:1")


def test_auto_device_falls_back_and_says_so(caplog):
    import backprop_gpu.backends as backends

    backends._auto_logged = False
    with caplog.at_level(logging.INFO, logger="backprop_gpu"):
        dev = bg.device("auto")
    expected = "cuda" if "cupy" in bg.available_backends() else "cpu"
    assert dev.type == expected
    assert "device 'auto' chose" in caplog.text


def test_bad_device_strings():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        bg.zeros(1, device="tpu")
    with pytest.raises(ValueError, match="bad device index"):
        bg.zeros(1, device="cuda:x")
