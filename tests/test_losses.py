"""Losses of nn.functional against hand-written NumPy formulas, with gradchecks, on every backend."""
import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from helpers import x64

REDUCTIONS = ["mean", "sum", "none"]


def reduce(per, reduction):
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


def _huber(x, t, delta=0.7):
    d = np.abs(x - t)
    return np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))


def _smooth_l1(x, t, beta=0.7):
    d = np.abs(x - t)
    return np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def _bce(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


ELEMENTWISE = [
    ("mse", F.mse_loss, lambda x, t: (x - t) ** 2),
    ("l1", F.l1_loss, lambda x, t: np.abs(x - t)),
    ("huber", lambda x, t, **kw: F.huber_loss(x, t, delta=0.7, **kw), _huber),
    ("huber_default", F.huber_loss, lambda x, t: _huber(x, t, 1.0)),
    ("smooth_l1", lambda x, t, **kw: F.smooth_l1_loss(x, t, beta=0.7, **kw), _smooth_l1),
    ("smooth_l1_beta0", lambda x, t, **kw: F.smooth_l1_loss(x, t, beta=0.0, **kw), lambda x, t: np.abs(x - t)),
    ("bce_logits", F.binary_cross_entropy_with_logits, _bce),
    ("bce_logits_pos_weight",
     lambda x, t, **kw: F.binary_cross_entropy_with_logits(x, t, pos_weight=np.array([1.0, 2.0, 0.5, 3.0]), **kw),
     lambda x, t: (1 - t) * x + (1 + (np.array([1.0, 2.0, 0.5, 3.0]) - 1) * t) * (
         np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))),
]
IDS = [c[0] for c in ELEMENTWISE]


def _pair(backend, name, seed=4):
    rng = np.random.default_rng(seed)
    xn = rng.standard_normal((3, 4)) * 2
    tn = rng.random((3, 4)) if name.startswith("bce") else rng.standard_normal((3, 4))
    return xn, tn


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,fn,ref", ELEMENTWISE, ids=IDS)
def test_elementwise_losses_values_and_gradients(backend, name, fn, ref, reduction):
    xn, tn = _pair(backend, name)
    x, t = x64(backend, xn), x64(backend, tn)
    out = fn(x, t, reduction=reduction)
    assert out.shape == (() if reduction != "none" else (3, 4)) and out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), reduce(ref(xn, tn), reduction), rtol=1e-10)
    # gradients with respect to the input and to the target
    assert bg.gradcheck(lambda x, t: fn(x, t, reduction=reduction), [x, t])


@pytest.mark.parametrize("name,fn,ref", ELEMENTWISE, ids=IDS)
def test_elementwise_losses_float32_and_constant_targets(backend, name, fn, ref):
    xn, tn = _pair(backend, name, seed=5)
    x = bg.tensor(xn.astype(np.float32), device=backend, requires_grad=True)
    out = fn(x, tn)  # a float64 NumPy target for a float32 input: cast to the input's dtype
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), ref(xn.astype(np.float32), tn.astype(np.float32)).mean(), rtol=1e-5)
    out.backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == (3, 4)


def test_bce_with_logits_is_stable_and_exact_at_zero(backend):
    x = bg.tensor([[-1000.0, 1000.0, 0.0, 30.0]], device=backend, requires_grad=True)
    t = bg.tensor([[1.0, 0.0, 0.25, 1.0]], device=backend)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
    np.testing.assert_allclose(loss.item(), 1000 + 1000 + np.log(2) + np.log1p(np.exp(-30.0)), rtol=1e-6)
    loss.backward()
    # d/dx = sigmoid(x) - t, also at x = 0 exactly (where max(x, 0) and |x| have kinks)
    np.testing.assert_allclose(x.grad.numpy(), [[-1.0, 1.0, 0.25, 1 / (1 + np.exp(-30.0)) - 1]], atol=1e-7)
    zero = x64(backend, np.zeros((2, 3)))
    assert bg.gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, bg.zeros_like(z) + 0.3), [zero])


def test_bce_with_logits_gradient_is_sigmoid_minus_target(backend):
    rng = np.random.default_rng(8)
    xn, tn = rng.standard_normal((5, 2)) * 3, rng.random((5, 2))
    x = x64(backend, xn)
    F.binary_cross_entropy_with_logits(x, x64(backend, tn, grad=False)).backward()
    np.testing.assert_allclose(x.grad.numpy(), (1 / (1 + np.exp(-xn)) - tn) / 10, rtol=1e-10)


def test_second_order_through_elementwise_losses(backend):
    rng = np.random.default_rng(9)
    x, t = x64(backend, rng.standard_normal((2, 3))), x64(backend, rng.random((2, 3)), grad=False)
    pw = np.array([2.0, 0.5, 1.0])
    for fn in (F.mse_loss, F.binary_cross_entropy_with_logits,
               lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw)):
        assert bg.gradcheck(lambda x: (bg.grad(fn(x, t), x, create_graph=True)[0] ** 2).sum(), [x])


# --- cross-entropy -------------------------------------------------------------------------

def _np_cross_entropy(xn, tn, reduction, smoothing=0.0, ignore=-100):
    lp = np_log_softmax(xn, axis=1)
    valid = tn != ignore
    per = -(1 - smoothing) * lp[np.arange(len(tn)), np.where(valid, tn, 0)] - smoothing * lp.mean(1)
    per = np.where(valid, per, 0)
    return {"mean": per.sum() / valid.sum(), "sum": per.sum(), "none": per}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore", [None, -100, 3])
def test_cross_entropy_values_and_gradients(backend, reduction, smoothing, ignore):
    rng = np.random.default_rng(5)
    x = x64(backend, rng.standard_normal((6, 4)) * 3)
    tn = np.array([0, 3, 1, 3, 2, 1])
    kw = {}
    if ignore is not None:
        tn[[1, 3]] = ignore
        kw["ignore_index"] = ignore
    t = bg.tensor(tn, device=backend)
    out = F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing, **kw)
    ref = _np_cross_entropy(x.numpy(), tn, reduction, smoothing, ignore if ignore is not None else -100)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-14)
    assert bg.gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing, **kw), [x])


def test_cross_entropy_is_one_fused_op_with_softmax_minus_one_hot_gradient(backend):
    rng = np.random.default_rng(6)
    xn, tn = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    x = x64(backend, xn)
    loss = F.cross_entropy(x, bg.tensor(tn, device=backend))
    node = loss.grad_fn
    assert node.op is F.CrossEntropy and node.inputs[0] is x  # one op straight on the logits
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), (np_softmax(xn, axis=1) - np.eye(5)[tn]) / 8, rtol=1e-10)


def test_cross_entropy_float32_int32_and_host_targets(backend):
    xn = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)
    x = bg.tensor(xn, device=backend, requires_grad=True)
    ref = _np_cross_entropy(xn.astype(np.float64), np.array([2, 0, 1, 1]), "mean")
    for target in (bg.tensor(np.array([2, 0, 1, 1], np.int32), device=backend), [2, 0, 1, 1],
                   np.array([2, 0, 1, 1])):
        out = F.cross_entropy(x, target)
        assert out.dtype == np.float32 and out.shape == ()
        np.testing.assert_allclose(out.item(), ref, rtol=1e-5)
    out.backward()
    assert x.grad.dtype == np.float32


def test_cross_entropy_second_order_and_stability(backend):
    x = x64(backend, [[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]])
    t = bg.tensor([2, 0], device=backend)
    for reduction in REDUCTIONS:
        def f(x):
            g = bg.grad(F.cross_entropy(x, t, reduction=reduction, label_smoothing=0.2).sum(), x,
                        create_graph=True)[0]
            return (g ** 2).sum()
        assert bg.gradcheck(f, [x])
    big = bg.tensor([[1000.0, -1000.0], [-1e4, 1e4]], device=backend, requires_grad=True)
    loss = F.cross_entropy(big, bg.tensor([1, 1], device=backend), reduction="sum")
    loss.backward()
    assert loss.item() == pytest.approx(2000.0)
    np.testing.assert_allclose(big.grad.numpy(), [[1, -1], [0, 0]], atol=1e-6)


def test_cross_entropy_all_ignored_mean_is_nan_as_torch(backend):
    x = x64(backend, np.ones((2, 3)))
    t = bg.tensor([-100, -100], device=backend)
    assert np.isnan(F.cross_entropy(x, t).item()) and np.isnan(F.nll_loss(x, t).item())
    assert F.cross_entropy(x, t, reduction="sum").item() == 0
    np.testing.assert_array_equal(F.cross_entropy(x, t, reduction="none").numpy(), [0, 0])


def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    rng = np.random.default_rng(10)
    xn, tn = rng.standard_normal((7, 5)) * 2, np.array([4, 0, -100, 2, 2, 1, 3])
    x, tt = torch.tensor(xn, requires_grad=True), torch.tensor(tn)
    for reduction in REDUCTIONS:
        for ls in (0.0, 0.3):
            ours = bg.tensor(xn, requires_grad=True)
            a = F.cross_entropy(ours, bg.tensor(tn), reduction=reduction, label_smoothing=ls)
            b = tF.cross_entropy(x, tt, reduction=reduction, label_smoothing=ls)
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12)
            a.sum().backward()
            x.grad = None
            b.sum().backward()
            np.testing.assert_allclose(ours.grad.numpy(), x.grad.numpy(), rtol=1e-10, atol=1e-15)
        lp = tF.log_softmax(x, 1)
        np.testing.assert_allclose(F.nll_loss(bg.tensor(lp.detach().numpy()), bg.tensor(tn), reduction=reduction).numpy(),
                                   tF.nll_loss(lp, tt, reduction=reduction).detach().numpy(), rtol=1e-12)
    yn, pn, pw = rng.standard_normal((7, 5)), rng.random((7, 5)), rng.random(5) * 3
    pairs = [
        (F.mse_loss, tF.mse_loss, {}), (F.l1_loss, tF.l1_loss, {}), (F.huber_loss, tF.huber_loss, {"delta": 0.6}),
        (F.smooth_l1_loss, tF.smooth_l1_loss, {"beta": 0.6}),
        (F.binary_cross_entropy_with_logits, tF.binary_cross_entropy_with_logits, {}),
    ]
    for ours, theirs, kw in pairs:
        for reduction in REDUCTIONS:
            t_np = pn if ours is F.binary_cross_entropy_with_logits else yn
            np.testing.assert_allclose(ours(bg.tensor(xn), bg.tensor(t_np), reduction=reduction, **kw).numpy(),
                                       theirs(x, torch.tensor(t_np), reduction=reduction, **kw).detach().numpy(),
                                       rtol=1e-12)
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(bg.tensor(xn), bg.tensor(pn), pos_weight=pw).numpy(),
        tF.binary_cross_entropy_with_logits(x, torch.tensor(pn), pos_weight=torch.tensor(pw)).detach().numpy(),
        rtol=1e-12)


# --- nll_loss ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_values_gradients_and_cross_entropy(backend, reduction):
    rng = np.random.default_rng(6)
    xn = rng.standard_normal((5, 3))
    tn = np.array([2, 0, -100, 1, 1])
    x, t = x64(backend, xn), bg.tensor(tn, device=backend)
    lp = x64(backend, np_log_softmax(xn, axis=1))
    valid = tn != -100
    per = np.where(valid, -lp.numpy()[np.arange(5), np.where(valid, tn, 0)], 0)
    expected = {"mean": per.sum() / valid.sum(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(F.nll_loss(lp, t, reduction=reduction).numpy(), expected, rtol=1e-12)
    assert bg.gradcheck(lambda lp: F.nll_loss(lp, t, reduction=reduction), [lp])
    a = F.nll_loss(F.log_softmax(x, dim=1), t, reduction=reduction)
    b = F.cross_entropy(x, t, reduction=reduction)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-15)
    assert bg.gradcheck(lambda x: F.nll_loss(F.log_softmax(x, dim=1), t, reduction=reduction), [x])
    assert bg.gradcheck(lambda lp: (bg.grad(F.nll_loss(lp * lp, t, reduction=reduction).sum(), lp,
                                            create_graph=True)[0] ** 2).sum(), [lp])


# --- errors ------------------------------------------------------------------------------------

ALL_LOSSES = [F.mse_loss, F.l1_loss, F.huber_loss, F.smooth_l1_loss, F.binary_cross_entropy_with_logits,
              F.cross_entropy, F.nll_loss]


@pytest.mark.parametrize("fn", ALL_LOSSES, ids=lambda f: f.__name__)
def test_every_loss_rejects_an_unknown_reduction(backend, fn):
    x = bg.zeros(4, 3, device=backend)
    t = bg.tensor([0, 1, 2, 0], device=backend) if fn in (F.cross_entropy, F.nll_loss) else bg.zeros(4, 3,
                                                                                                      device=backend)
    for bad in ("avg", "elementwise_mean", None):
        with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got"):
            fn(x, t, reduction=bad)


def test_elementwise_loss_target_errors(backend):
    x = bg.zeros(4, 3, device=backend)
    for fn in ALL_LOSSES[:5]:
        with pytest.raises(ValueError, match=r"input shape \(4, 3\) and target shape \(4,\) differ"):
            fn(x, bg.zeros(4, device=backend))
        with pytest.raises(TypeError, match="target must be floating point .* got dtype int64"):
            fn(x, bg.tensor(np.zeros((4, 3), np.int64), device=backend))
        with pytest.raises(TypeError, match="input must be floating point, got dtype int64"):
            fn(bg.tensor(np.zeros((4, 3), np.int64), device=backend), x)
    with pytest.raises(ValueError, match="delta must be positive"):
        F.huber_loss(x, x, delta=0)
    with pytest.raises(ValueError, match="beta must be non-negative"):
        F.smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast against input \(4, 3\)"):
        F.binary_cross_entropy_with_logits(x, x, pos_weight=[1.0, 2.0])


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss], ids=lambda f: f.__name__)
def test_class_target_errors(backend, fn):
    name = fn.__name__
    x = bg.zeros(4, 3, device=backend)
    with pytest.raises(IndexError, match=rf"{name}: target holds class indices in \[0, 5\] but input \(4, 3\) has "
                                         r"3 classes"):
        fn(x, bg.tensor([0, 1, 2, 5], device=backend)).item()  # on a GPU the check reports at the next sync
    with pytest.raises(IndexError, match=r"class indices in \[-1, 2\]"):
        fn(x, bg.tensor([0, -1, 2, 2], device=backend)).item()
    with pytest.raises(TypeError, match=r"integer class indices \(int64\), got dtype float32 \(shape \(4,\)\)"):
        fn(x, bg.zeros(4, device=backend))
    with pytest.raises(ValueError, match=r"expected input \(N, C\) and target \(N,\), got input \(4, 3\) and "
                                         r"target \(3,\)"):
        fn(x, bg.tensor([0, 1, 2], device=backend))
    with pytest.raises(ValueError, match=r"got input \(2, 2, 3\) and target \(2,\)"):
        fn(bg.zeros(2, 2, 3, device=backend), bg.tensor([0, 1], device=backend))
    with pytest.raises(TypeError, match="input must be floating point, got dtype int64"):
        fn(bg.tensor(np.zeros((4, 3), np.int64), device=backend), bg.tensor([0, 1, 2, 0], device=backend))
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        fn(x, bg.tensor([0, 1, 2, 0], device=backend), ignore_index=None)
    # an ignored index may lie outside [0, C)
    assert fn(x, bg.tensor([0, 7, 2, 0], device=backend), ignore_index=7).shape == ()


def test_label_smoothing_range(backend):
    x, t = bg.zeros(2, 3, device=backend), bg.tensor([0, 1], device=backend)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            F.cross_entropy(x, t, label_smoothing=bad)
    # ls = 1: the target is uniform, and uniform logits give log(C) exactly
    assert F.cross_entropy(x, t, label_smoothing=1.0).item() == pytest.approx(np.log(3))


_FUNCTIONAL_LOSSES = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
                      "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "kl_div"]


@pytest.mark.parametrize("name", _FUNCTIONAL_LOSSES)
def test_functional_losses_take_torchs_parameters_in_torchs_order(name):
    """A torch script passes these positionally too (``F.binary_cross_entropy_with_logits(x, t, w)``):
    the parameter names and their order are torch's."""
    import inspect

    torch = pytest.importorskip("torch")
    ours = list(inspect.signature(getattr(F, name)).parameters)
    theirs = list(inspect.signature(getattr(torch.nn.functional, name)).parameters)
    assert ours == theirs


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_loss_weights_match_torch(backend, name, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.random((4, 3)) * 0.9 + 0.05  # probabilities, for binary_cross_entropy
    t = rng.random((4, 3))
    w = rng.random((4, 3)) + 0.5  # torch's mse/l1/huber take only a weight of the input's size
    ours_x = bg.tensor(x, device=backend, requires_grad=True)
    loss = getattr(F, name)(ours_x, bg.tensor(t, device=backend), weight=bg.tensor(w, device=backend),
                            reduction=reduction)
    tx = torch.tensor(x, requires_grad=True)
    tloss = getattr(torch.nn.functional, name)(tx, torch.tensor(t), weight=torch.tensor(w), reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    tloss.sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_legacy_reduction_arguments_are_refused_by_name():
    x = bg.ones(2, 2)
    with pytest.raises(NotImplementedError, match="size_average"):
        F.mse_loss(x, x, True)
    with pytest.raises(NotImplementedError, match="reduce"):
        F.binary_cross_entropy_with_logits(x, x, None, None, False)
