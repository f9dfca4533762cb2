"""The tape: higher-order gradients, bg.grad, grad modes, detach, accumulation, graph lifetime,
deep graphs and version counters, on every available backend."""
import gc
import threading
import weakref

import numpy as np
import pytest
import scipy.special

import backprop_gpu as bg
from backprop_gpu import autograd
from backprop_gpu.autograd import GraphFreedError
from backprop_gpu.tape import mode
from helpers import x64


def test_apples_and_tax(backend):
    """The seed example: total = price x count x (1 + tax), 2 apples at 10 each, 10% tax."""
    price, count, tax = (bg.tensor(v, device=backend, requires_grad=True) for v in (10.0, 2.0, 0.1))
    total = price * count * (1 + tax)
    total.backward()
    assert total.item() == pytest.approx(22.0)
    assert price.grad.item() == pytest.approx(2.2)  # count * (1 + tax)
    assert count.grad.item() == pytest.approx(11.0)  # price * (1 + tax)
    assert tax.grad.item() == pytest.approx(20.0)  # price * count
    assert total.dtype == price.grad.dtype == np.float32 and price.grad.shape == ()


# -- higher-order gradients -----------------------------------------------------------------------
def test_derivatives_of_x_cubed_to_third_order(backend):
    x = x64(backend, [0.5, -1.5, 2.0])
    (d1,) = bg.grad((x ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(d1.numpy(), 3 * x.numpy() ** 2)
    (d2,) = bg.grad(d1.sum(), x, create_graph=True)
    np.testing.assert_allclose(d2.numpy(), 6 * x.numpy())
    (d3,) = bg.grad(d2.sum(), x)
    np.testing.assert_allclose(d3.numpy(), [6, 6, 6])
    assert not d3.requires_grad


def _phi(x):
    return np.exp(-x * x / 2) / np.sqrt(2 * np.pi)


def _gelu_tanh_prime(x):
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


@pytest.mark.parametrize("name,fn,second", [
    ("tanh", bg.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    ("sigmoid", bg.sigmoid, lambda x: (s := scipy.special.expit(x)) * (1 - s) * (1 - 2 * s)),
    ("exp", bg.exp, np.exp),
    ("log", lambda x: bg.log(x * x + 1), lambda x: (2 - 2 * x ** 2) / (x ** 2 + 1) ** 2),
    ("softplus", bg.softplus, lambda x: (s := scipy.special.expit(x)) * (1 - s)),
    ("gelu", bg.gelu, lambda x: _phi(x) * (2 - x * x)),
    # the tanh form's second derivative by central differences of its (closed-form) first derivative
    ("gelu_tanh", lambda x: bg.gelu(x, approximate="tanh"),
     lambda x: (_gelu_tanh_prime(x + 1e-5) - _gelu_tanh_prime(x - 1e-5)) / 2e-5),
    ("sqrt", lambda x: bg.sqrt(x * x + 1), lambda x: (x * x + 1) ** -1.5),
])
def test_second_derivatives(backend, name, fn, second):
    x = x64(backend, [0.3, -0.7, 1.2, -2.1])
    (g,) = bg.grad(fn(x).sum(), x, create_graph=True)
    assert g.requires_grad
    (gg,) = bg.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), second(x.numpy()), rtol=1e-8 if name == "gelu_tanh" else 1e-10)


def test_hessian(backend):
    """f(x) = sum(x^3) + x0 x1 x2: H = diag(6 x) + the off-diagonal x_k's."""
    x = x64(backend, [1.0, -2.0, 0.5])
    f = (x ** 3).sum() + x[0] * x[1] * x[2]
    (g,) = bg.grad(f, x, create_graph=True)
    rows = [bg.grad(g[i], x, retain_graph=True)[0].numpy() for i in range(3)]
    a, b, c = x.numpy()
    np.testing.assert_allclose(np.stack(rows), [[6 * a, c, b], [c, 6 * b, a], [b, a, 6 * c]])


def test_gradcheck_of_a_gradient_function(backend):
    """The create_graph backward of matmul, gelu, softmax, max, logsumexp and broadcasting is itself
    differentiable and correct (a gradient penalty's gradient)."""
    rng = np.random.default_rng(0)
    w = x64(backend, rng.standard_normal((3, 4)))
    b = x64(backend, rng.standard_normal(4))
    x = bg.tensor(rng.standard_normal((2, 3)), device=backend)

    def penalty(w, b):
        h = bg.gelu(x @ w + b)
        loss = (bg.softmax(h, axis=1) * h).sum() + h.max(dim=0).values.sum() + h.amax(axis=1).sum() + bg.logsumexp(h, axis=1).mean()
        gw, gb = bg.grad(loss, [w, b], create_graph=True)
        return (gw * gw).sum() + gb.sum()

    assert bg.gradcheck(penalty, [w, b])


def test_backward_with_create_graph_then_double_backward(backend):
    x = x64(backend, [1.0, 2.0])
    (x ** 2).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad and g.grad_fn is not None
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])
    x.grad = None
    (g * g).sum().backward()  # d/dx sum((2x)^2) = 8x
    np.testing.assert_allclose(x.grad.numpy(), [8.0, 16.0])


def test_create_graph_gradients_of_two_leaves_are_separate_tensors(backend):
    """add sends one gradient tensor both ways; each leaf must still get its own .grad, and a later
    plain backward accumulates into each separately (it once wrote into a shared read-only view)."""
    a, b = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0])
    (a + b).sum().backward(create_graph=True)
    assert a.grad is not b.grad
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [4.0, 4.0])
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])
    s = x64(backend, 2.0)  # a 0-d leaf whose gradient is the seed itself
    (s + 0).backward(create_graph=True)
    (s * 5).backward()
    assert s.grad.item() == 6.0


# -- bg.grad --------------------------------------------------------------------------------------
def test_grad_returns_without_accumulating(backend):
    x, y = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0])
    gx, gy = bg.grad((x * y).sum(), [x, y])
    np.testing.assert_allclose(gx.numpy(), [3, 4])
    np.testing.assert_allclose(gy.numpy(), [1, 2])
    assert x.grad is None and y.grad is None
    (gx_only,) = bg.grad((x * y).sum(), x)
    np.testing.assert_allclose(gx_only.numpy(), [3, 4])
    assert y.grad is None  # leaves outside ``inputs`` are left alone too


def test_grad_allow_unused(backend):
    x, z = x64(backend, [1.0, 2.0]), x64(backend, [1.0])
    with pytest.raises(RuntimeError, match="not used in the graph; pass allow_unused=True"):
        bg.grad((x * 2).sum(), [x, z])
    gx, gz = bg.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gz is None
    np.testing.assert_allclose(gx.numpy(), [2, 2])


def test_grad_wrt_an_intermediate_and_several_outputs(backend):
    x = x64(backend, [1.0, 2.0])
    h = x * 3
    (gh,) = bg.grad((h * h).sum(), h)
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())
    y1, y2 = x * x, x.exp()
    gx, = bg.grad([y1, y2], x, grad_outputs=[bg.tensor([1.0, 0.0], dtype="float64", device=backend),
                                             bg.tensor([0.0, 1.0], dtype="float64", device=backend)])
    np.testing.assert_allclose(gx.numpy(), [2.0, np.exp(2.0)])


def test_grad_frees_the_graph_unless_retained_or_recording(backend):
    x = x64(backend, [1.0, 2.0])
    y = (x.exp() * x).sum()
    bg.grad(y, x, retain_graph=True)
    bg.grad(y, x)
    with pytest.raises(GraphFreedError):
        bg.grad(y, x)
    y = (x.exp() * x).sum()
    g1, = bg.grad(y, x, create_graph=True)  # create_graph keeps the graph by default
    g2, = bg.grad(y, x)
    np.testing.assert_allclose(g1.numpy(), g2.numpy())


def test_grad_edge_cases(backend):
    x = x64(backend, 2.0)
    g1, g2 = bg.grad(x * 3, [x, x])  # an input given twice gets its gradient twice
    assert g1.item() == g2.item() == 3.0
    (g,) = bg.grad(x, x)  # the seed itself comes back: a fresh, writable array
    g.add_(1)
    assert g.item() == 2.0 and bg.grad(x, x)[0].item() == 1.0
    y = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    (gy,) = bg.grad(y * 2, y, grad_outputs=bg.tensor(np.ones(2), device=backend))  # a float64 cotangent
    assert gy.dtype == np.float32
    np.testing.assert_allclose(gy.numpy(), [2.0, 2.0])


def test_grad_results_have_the_inputs_dtype(backend):
    """A float32 leaf in a float64 computation gets a float32 gradient, as in PyTorch."""
    x32 = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    w64 = x64(backend, [3.0, 4.0])
    y = (x32 * w64).sum()
    assert y.dtype == np.float64
    gx, gw = bg.grad(y, [x32, w64], retain_graph=True)
    assert gx.dtype == np.float32 and gw.dtype == np.float64
    y.backward()
    assert x32.grad.dtype == np.float32
    np.testing.assert_allclose(x32.grad.numpy(), [3.0, 4.0])


# -- grad modes -----------------------------------------------------------------------------------
def test_no_grad_and_enable_grad(backend):
    x = x64(backend, [1.0, 2.0])
    with bg.no_grad():
        assert not bg.is_grad_enabled()
        y = x * 2
        with bg.enable_grad():
            assert bg.is_grad_enabled()
            z = x * 3
        assert not bg.is_grad_enabled()
    assert bg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_grad_mode_decorators_are_reentrant_and_restore_on_error():
    @bg.no_grad()
    def depth(n):
        assert not bg.is_grad_enabled()
        return depth(n - 1) if n else 0

    depth(3)  # each call must restore what it found, not what a recursive call left
    assert bg.is_grad_enabled()

    @bg.enable_grad()
    def inner():
        return bg.is_grad_enabled()

    with bg.no_grad():
        assert inner() and not bg.is_grad_enabled()
    with pytest.raises(KeyError), bg.no_grad():
        raise KeyError("boom")
    assert bg.is_grad_enabled()


def test_grad_mode_is_per_thread():
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with bg.no_grad():
            entered.set()
            release.wait(5)
            seen["worker"] = bg.is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    entered.wait(5)
    seen["main"] = bg.is_grad_enabled()
    release.set()
    t.join()
    assert seen == {"main": True, "worker": False}


def test_detach(backend):
    x = x64(backend, [1.0, 2.0])
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    (x * x.detach()).sum().backward()  # the detached factor is a constant
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])
    shared = x.detach()
    with bg.no_grad():
        shared.mul_(10)  # same storage
    np.testing.assert_allclose(x.numpy(), [10.0, 20.0])
    h = x * 1
    h.detach_()
    assert h.is_leaf and not h.requires_grad


def test_requires_grad_(backend):
    x = bg.tensor([1.0, 2.0], device=backend)
    assert not (x * 2).requires_grad
    assert x.requires_grad_() is x and x.requires_grad and x.is_leaf
    y = x * 2
    assert y.requires_grad and not y.is_leaf
    x.requires_grad_(False)
    assert not (x * 2).requires_grad
    with pytest.raises(RuntimeError, match="only be turned off on leaf tensors; use .detach()"):
        y.requires_grad_(False)
    with pytest.raises(TypeError, match="only floating-point tensors can require grad, got dtype int64"):
        bg.tensor([1, 2], device=backend).requires_grad_()


# -- accumulation and graph lifetime ----------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls(backend):
    x = x64(backend, [1.0, 2.0])
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 7.0])
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_accumulation_into_0d_and_broadcast_leaves(backend):
    """0-d leaves: NumPy hands back scalars for 0-d results, which must not end up as an immutable .grad."""
    s = bg.tensor(3.0, device=backend, requires_grad=True)
    b = x64(backend, [1.0, 2.0, 3.0])
    for _ in range(2):
        (s * bg.ones(2, 3, device=backend) + b).sum().backward()
    assert s.grad.item() == pytest.approx(12.0)
    np.testing.assert_allclose(b.grad.numpy(), [4.0, 4.0, 4.0])
    p, c = (bg.tensor(v, device=backend, requires_grad=True) for v in (10.0, 2.0))
    (p * c).backward()
    (p * c).backward()
    assert p.grad.item() == 4.0 and c.grad.item() == 20.0


def test_gradients_are_not_aliased(backend):
    """The engine hands each leaf its own gradient array: changing one changes nothing else."""
    a, b = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0])
    (a + b).sum().backward()
    with bg.no_grad():
        a.grad.mul_(10)
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])
    c = x64(backend, 1.0)
    c.backward()  # a leaf's own backward: the seed is copied, not handed out
    c.backward()
    assert c.grad.item() == 2.0


def test_retain_graph_and_freed_graph(backend):
    x = x64(backend, [1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    expected = np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0]))
    np.testing.assert_allclose(x.grad.numpy(), 2 * expected)
    with pytest.raises(GraphFreedError, match="second time.*retain_graph=True"):
        y.backward()


def test_backward_frees_intermediate_tensors(backend):
    x = x64(backend, np.ones(1000))
    h = x * 2
    alive = weakref.ref(h)
    y = (h * h).sum()
    del h
    y.backward(retain_graph=True)
    gc.collect()
    assert alive() is not None  # kept for another backward
    y.backward()
    gc.collect()
    assert alive() is None  # the graph let go of its saved tensors
    np.testing.assert_allclose(x.grad.numpy(), np.full(1000, 16.0))


def test_backward_on_a_leaf(backend):
    x = x64(backend, [1.0, 2.0])
    x.backward(gradient=bg.tensor([3.0, 4.0], dtype="float64", device=backend))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_constants_get_no_gradient(backend):
    x, c = x64(backend, [1.0, 2.0]), x64(backend, [5.0, 6.0], grad=False)
    (x * c + c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 6.0])


# -- deep graphs ----------------------------------------------------------------------------------
def test_deep_chain_of_adds(backend):
    x = x64(backend, [1.0])
    y = x
    for _ in range(20000):
        y = y + 1.0
    y = y * 2
    y.sum().backward()
    assert x.grad.item() == 2.0 and y.item() == 2 * 20001


def test_deep_chain_with_create_graph(backend):
    x = x64(backend, [0.5])
    y = x
    for _ in range(12000):
        y = y + x  # y = 12001 x
    (g,) = bg.grad((y * y).sum(), x, create_graph=True)  # 2 * 12001^2 * x
    assert g.item() == pytest.approx(2 * 12001 ** 2 * 0.5)
    (gg,) = bg.grad(g.sum(), x)
    assert gg.item() == pytest.approx(2 * 12001 ** 2)


def test_deep_mixed_chain_matches_numpy(backend):
    x = x64(backend, [0.3, -0.2])
    y, ref, dref = x, x.numpy(), np.ones(2)
    for _ in range(2500):  # 10,000 nodes
        y = bg.tanh(y) * 0.5 + y * 0.5
        t = np.tanh(ref)
        dref = dref * (0.5 * (1 - t * t) + 0.5)
        ref = 0.5 * t + 0.5 * ref
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), dref, rtol=1e-9)


def test_dropping_a_deep_graph_unused(backend):
    """Freeing 50,000 chained nodes nobody backpropagated through must not hit the C stack."""
    x = x64(backend, [1.0])
    y = x
    for _ in range(50000):
        y = y + 1.0
    ref = weakref.ref(y.grad_fn)
    del y
    gc.collect()
    assert ref() is None


# -- version counters -----------------------------------------------------------------------------
def test_inplace_change_of_a_saved_input_is_detected(backend):
    x, w = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0], grad=False)
    y = (x * w).sum()
    w += 1  # mul saved w for x's gradient
    with pytest.raises(RuntimeError, match=r"needed by mul .*modified by an in-place operation.*"
                                           r"version is 1, expected 0"):
        y.backward()


def test_inplace_change_of_a_saved_output_is_detected(backend):
    x = x64(backend, [1.0, 2.0])
    e = x.exp()  # exp's VJP reads its output
    with bg.no_grad():
        e.mul_(2)
    with pytest.raises(RuntimeError, match="needed by exp .*in-place"):
        e.sum().backward()


@pytest.mark.parametrize("how", ["slice", "element", "reshape", "transpose", "detach", "data", "setitem"])
def test_inplace_change_through_a_view_is_detected(backend, how):
    """Views share their base's version counter, so a change through either is seen."""
    x, w = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0], grad=False)
    y = (x * w).sum()
    with bg.no_grad():
        if how == "slice":
            w[0:1].add_(1)
        elif how == "element":
            w[1].fill_(0)
        elif how == "reshape":
            w.reshape(2, 1).mul_(2)
        elif how == "transpose":
            w.T.zero_()
        elif how == "detach":
            w.detach().sub_(1)
        elif how == "data":
            w.data.add_(1)
        else:
            w[0] = 7.0
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_inplace_change_of_the_base_of_a_saved_view_is_detected(backend):
    x, w = x64(backend, [[1.0, 2.0]]), x64(backend, [[3.0], [4.0]], grad=False)
    y = (x * w.T).sum()  # mul saved the view w.T
    with bg.no_grad():
        w.add_(1)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_inplace_changes_that_cannot_matter_are_allowed(backend):
    x, w = x64(backend, [1.0, 2.0]), x64(backend, [[3.0, 4.0], [5.0, 6.0]], grad=False)
    y = (x + w[0]).sum()  # add saves nothing
    w.add_(1)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])
    x.grad = None
    c = w.T.reshape(-1)  # not contiguous: reshape copies, so c does not see w change
    y = (x * c[:2]).sum()
    w.zero_()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 6.0])


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_grad_and_anomaly_modes_nest_and_restore(backend):
    """The tape's fast path reads one combined flag; every nesting of the two modes must keep it true."""
    x = bg.tensor([1.0, -1.0], device=backend, requires_grad=True)
    with bg.detect_anomaly():
        with bg.no_grad():
            assert not (x * 2).requires_grad
            with bg.enable_grad():
                assert (x * 2).requires_grad
                with pytest.raises(FloatingPointError, match="NaN"):
                    bg.log(x - 2 * x.detach())  # log of a negative value
            assert not (x * 2).requires_grad
        with pytest.raises(FloatingPointError):
            bg.sqrt(-x)
    y = bg.sqrt(-x)  # anomaly off again: NaN passes, and the op is recorded
    assert y.requires_grad and bool(bg.isfinite(y).numpy()[0]) is False
    assert mode.state.plain and autograd.is_grad_enabled() and not autograd.is_anomaly_enabled()
