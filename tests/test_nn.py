"""nn: modules, layers, initialisers and losses, on every backend."""
import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from backprop_gpu import nn, optim


def x64(backend, v, grad=True):
    return bg.tensor(np.asarray(v, dtype=np.float64), device=backend, requires_grad=grad)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
        self.shared = self.fc  # registered twice, counted once

    def forward(self, x):
        return self.head(self.norm(self.fc(x)))


def test_module_registration_and_traversal():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc.weight", "fc.bias", "norm.weight", "norm.bias", "head.1.weight", "head.1.bias"]
    assert m.num_parameters() == 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2
    assert [n for n, _ in m.named_buffers()] == ["norm.running_mean", "norm.running_var"]
    assert len(list(m.children())) == 4 and all(isinstance(p, nn.Parameter) for p in m.parameters())
    assert not m.eval().training and not m.head[1].training and m.train().norm.training
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(m)


def test_state_dict_round_trip_and_errors():
    bg.manual_seed(0)
    a, b = Block(), Block()
    sd = a.state_dict()
    assert set(sd) == {n for n, _ in a.named_parameters()} | {"norm.running_mean", "norm.running_var"}
    b.load_state_dict(sd)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    weight_before = b.fc.weight.numpy()
    bad = dict(sd)
    bad.pop("fc.bias")
    bad["extra"] = bg.zeros(1)
    bad["head.1.weight"] = bg.zeros(3, 3)
    bad["fc.weight"] = bg.zeros(4, 3)
    with pytest.raises(RuntimeError) as e:
        b.load_state_dict(bad)
    msg = str(e.value)
    assert "missing keys: fc.bias" in msg and "unexpected keys: extra" in msg
    assert "head.1.weight: checkpoint (3, 3) vs model (2, 4)" in msg
    np.testing.assert_array_equal(b.fc.weight.numpy(), weight_before)  # nothing loaded
    missing, unexpected = b.load_state_dict({"fc.weight": np.ones((4, 3))}, strict=False)
    assert "fc.bias" in missing and not unexpected and b.fc.weight.numpy().sum() == 12


def test_load_state_dict_keeps_optimizer_views():
    m = nn.Linear(3, 2)
    opt = optim.SGD(m.parameters(), lr=0.1)
    m.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.ones(2)})
    assert m.weight.array.base is opt.flat_groups[0].data
    np.testing.assert_array_equal(opt.flat_groups[0].data, [0] * 6 + [1, 1])


def test_linear_matches_numpy_and_torch_init(backend):
    bg.manual_seed(1)
    lin = nn.Linear(500, 300, device=backend)
    w = lin.weight.numpy()
    bound = 1 / np.sqrt(500)
    assert lin.weight.shape == (300, 500) and np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound
    x = np.random.default_rng(0).standard_normal((4, 500)).astype(np.float32)
    np.testing.assert_allclose(lin(bg.tensor(x, device=backend)).numpy(), x @ w.T + lin.bias.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_linear_gradients(backend):
    rng = np.random.default_rng(0)
    x, w, b = (x64(backend, rng.standard_normal(s)) for s in ((2, 3, 4), (5, 4), (5,)))
    assert bg.gradcheck(lambda x, w, b: F.linear(x, w, b), [x, w, b])
    assert bg.gradcheck(lambda x, w: F.linear(x, w), [x, w])
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 4\) does not fit weight of shape \(4, 5\)"):
        F.linear(x, x64(backend, np.zeros((4, 5))))


def test_layer_norm(backend):
    rng = np.random.default_rng(1)
    x, w, b = x64(backend, rng.standard_normal((3, 4))), x64(backend, rng.random(4) + 0.5), x64(backend, rng.random(4))
    xn = x.numpy()
    ref = (xn - xn.mean(1, keepdims=True)) / np.sqrt(xn.var(1, keepdims=True) + 1e-5) * w.numpy() + b.numpy()
    np.testing.assert_allclose(F.layer_norm(x, 4, w, b).numpy(), ref, rtol=1e-10)
    assert bg.gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), [x, w, b])
    ln = nn.LayerNorm(4, device=backend)
    assert ln(bg.tensor(xn.astype(np.float32), device=backend)).shape == (3, 4)


def test_batch_norm_train_and_eval(backend):
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3, momentum=0.1, device=backend)
    xn = rng.standard_normal((8, 3)).astype(np.float32) * 2 + 1
    y = bn(bg.tensor(xn, device=backend)).numpy()
    np.testing.assert_allclose(y, (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * xn.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    bn.eval()
    y2 = bn(bg.tensor(xn, device=backend)).numpy()
    np.testing.assert_allclose(y2, (xn - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-5),
                               rtol=1e-5)
    x3 = x64(backend, rng.standard_normal((4, 2, 3)))
    w, b = x64(backend, [1.5, 0.5]), x64(backend, [0.1, -0.2])
    assert bg.gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x3, w, b])
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\) got input of shape \(2, 4\)"):
        bn(bg.zeros(2, 4, device=backend))


def test_dropout(backend):
    d = nn.Dropout(0.25)
    x = bg.ones(10000, device=backend)
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.03
    np.testing.assert_allclose(np.unique(y), [0, 1 / 0.75], rtol=1e-6)
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)


def test_embedding_scatter_adds(backend):
    emb = nn.Embedding(5, 2, device=backend)
    idx = bg.tensor(np.array([[1, 3], [1, 1]]), device=backend)
    out = emb(idx)
    assert out.shape == (2, 2, 2)
    out.sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy()[:, 0], [0, 3, 0, 1, 0])
    with pytest.raises(IndexError, match=r"Embedding\(5\) got indices in \[0, 7\]"):
        emb(bg.tensor([0, 7], device=backend))


def test_initialisers_statistics():
    bg.manual_seed(3)
    t = bg.empty(400, 600)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(t.numpy().std() - np.sqrt(2 / 600)) < 0.02 * np.sqrt(2 / 600)
    nn.init.xavier_uniform_(t)
    a = np.sqrt(6 / 1000)
    assert np.abs(t.numpy()).max() <= a and abs(t.numpy().std() - a / np.sqrt(3)) < 0.02 * a
    nn.init.xavier_normal_(t, gain=2.0)
    assert abs(t.numpy().std() - 2 * np.sqrt(2 / 1000)) < 0.04 * np.sqrt(2 / 1000)
    nn.init.kaiming_uniform_(t, mode="fan_out")
    b = np.sqrt(6 / 400) * (1 + 1e-6)  # gain sqrt(2) for leaky_relu(0), fan_out 400
    assert np.abs(t.numpy()).max() <= b
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(bg.empty(3))


LOSSES = [
    ("mse", F.mse_loss, lambda x, t: (x - t) ** 2),
    ("l1", F.l1_loss, lambda x, t: np.abs(x - t)),
    ("huber", lambda x, t, **kw: F.huber_loss(x, t, delta=0.7, **kw),
     lambda x, t: np.where(np.abs(x - t) < 0.7, 0.5 * (x - t) ** 2, 0.7 * (np.abs(x - t) - 0.35))),
    ("bce_logits", F.binary_cross_entropy_with_logits,
     lambda x, t: np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,fn,ref", LOSSES, ids=[c[0] for c in LOSSES])
def test_regression_losses(backend, name, fn, ref, reduction):
    rng = np.random.default_rng(4)
    x = x64(backend, rng.standard_normal((3, 4)) * 2)
    tn = rng.random((3, 4)) if name == "bce_logits" else rng.standard_normal((3, 4))
    t = x64(backend, tn, grad=False)
    per = ref(x.numpy(), tn)
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(fn(x, t, reduction=reduction).numpy(), expected, rtol=1e-10)
    assert bg.gradcheck(lambda x: fn(x, t, reduction=reduction), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(backend, reduction, smoothing):
    rng = np.random.default_rng(5)
    x = x64(backend, rng.standard_normal((6, 4)) * 3)
    tn = np.array([0, 3, 1, -100, 2, 3])
    t = bg.tensor(tn, device=backend)
    lp = np_log_softmax(x.numpy(), axis=1)
    valid = tn != -100
    per = -(1 - smoothing) * lp[np.arange(6), np.where(valid, tn, 0)] - smoothing * lp.mean(1)
    per = np.where(valid, per, 0)
    expected = {"mean": per.sum() / valid.sum(), "sum": per.sum(), "none": per}[reduction]
    out = F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10)
    assert bg.gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing), [x])


def test_cross_entropy_second_order_and_stability(backend):
    x = x64(backend, [[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]])
    t = bg.tensor([2, 0], device=backend)
    assert bg.gradcheck(lambda x: (bg.grad(F.cross_entropy(x, t), x, create_graph=True)[0] ** 2).sum(), [x])
    big = bg.tensor([[1000.0, -1000.0]], device=backend, requires_grad=True)
    loss = F.cross_entropy(big, bg.tensor([1], device=backend))
    loss.backward()
    assert loss.item() == pytest.approx(2000.0) and np.isfinite(big.grad.numpy()).all()


def test_nll_loss_matches_cross_entropy(backend):
    rng = np.random.default_rng(6)
    x = x64(backend, rng.standard_normal((5, 3)))
    t = bg.tensor(np.array([2, 0, -100, 1, 1]), device=backend)
    for reduction in ("mean", "sum", "none"):
        a = F.nll_loss(bg.log_softmax(x, axis=1), t, reduction=reduction)
        b = F.cross_entropy(x, t, reduction=reduction)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    assert bg.gradcheck(lambda x: F.nll_loss(bg.log_softmax(x, axis=1), t), [x])


def test_loss_input_errors(backend):
    x = bg.zeros(4, 3, device=backend)
    with pytest.raises(IndexError, match=r"class indices in \[0, 5\] but input has 3 classes"):
        F.cross_entropy(x, bg.tensor([0, 1, 2, 5], device=backend))
    with pytest.raises(TypeError, match="integer class indices, got dtype float32"):
        F.cross_entropy(x, bg.zeros(4, device=backend))
    with pytest.raises(ValueError, match=r"expected input \(N, C\) and target \(N,\), got input \(4, 3\) and target \(3,\)"):
        F.cross_entropy(x, bg.tensor([0, 1, 2], device=backend))
    with pytest.raises(ValueError, match=r"input shape \(4, 3\) and target shape \(4,\) differ"):
        F.mse_loss(x, bg.zeros(4, device=backend))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(x, x, reduction="avg")


def test_a_small_regression_trains(backend):
    bg.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X @ np.array([1.5, -2.0, 0.5], np.float32) + 0.3)[:, None]
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(backend)
    opt = optim.Adam(model.parameters(), lr=0.05)
    xt, yt = bg.tensor(X, device=backend), bg.tensor(y, device=backend)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = F.mse_loss(model(xt), yt)
        loss.backward()
        opt.step()
        first = first or loss.item()
    assert loss.item() < 0.02 * first


def test_module_to_moves_parameters_in_place():
    m = nn.Linear(2, 2)
    w = m.weight
    target = "numba-cuda" if "numba-cuda" in bg.available_backends() else "numpy"
    m.to(target)
    assert m.weight is w and w.backend is bg.get_backend(target)
    m.to(dtype="float64")
    assert w.dtype == np.float64
