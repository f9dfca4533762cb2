"""nn: Parameter, Module, containers, layers and initialisers, on every backend (losses: test_losses.py)."""
import copy
import math
from collections import OrderedDict

import numpy as np
import pytest
from scipy.special import erf

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from backprop_gpu import nn, optim
from helpers import x64


class Block(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.fc = nn.Linear(3, 4, device=device)
        self.norm = nn.BatchNorm1d(4, device=device)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, device=device))
        self.shared = self.fc  # registered twice: parameters() once, state_dict() under both names (torch)

    def forward(self, x):
        return self.head(self.norm(self.fc(x)))


# --- Parameter ------------------------------------------------------------------------

def test_parameter_is_a_tensor_that_requires_grad(backend):
    t = bg.tensor([[1.0, 2.0], [3.0, 4.0]], device=backend)
    p = nn.Parameter(t)
    assert isinstance(p, bg.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf and p.grad is None and p.device == t.device
    assert p.array is t.array  # shares storage, as torch.nn.Parameter(t)
    y = (p * p).sum() + bg.exp(p).mean()
    y.backward()
    pn = t.numpy()
    np.testing.assert_allclose(y.numpy(), (pn * pn).sum() + np.exp(pn).mean(), rtol=1e-6)
    np.testing.assert_allclose(p.grad.numpy(), 2 * pn + np.exp(pn) / 4, rtol=1e-6)
    assert isinstance(p + 1, bg.Tensor) and not isinstance(p + 1, nn.Parameter)
    q = nn.Parameter(np.zeros((2, 3)), requires_grad=False)
    assert q.dtype == np.float64 and not q.requires_grad and q.shape == (2, 3)
    assert repr(q).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        nn.Parameter(bg.tensor([1, 2]))


# --- Module: registration and traversal -------------------------------------------------

def test_registration_and_traversal_of_nested_modules():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc.weight", "fc.bias", "norm.weight", "norm.bias", "head.1.weight", "head.1.bias"]
    assert [id(p) for p in m.parameters()] == [id(p) for _, p in m.named_parameters()]
    assert all(isinstance(p, nn.Parameter) for p in m.parameters())
    assert m.num_parameters() == 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2
    assert [n for n, _ in m.named_buffers()] == ["norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]
    assert [n for n, _ in m.named_modules()] == ["", "fc", "norm", "head", "head.0", "head.1"]
    assert [type(c).__name__ for c in m.children()] == ["Linear", "BatchNorm1d", "Sequential"]
    assert len(list(m.modules())) == 6
    assert [n for n, _ in m.head.named_parameters(prefix="head")] == ["head.1.weight", "head.1.bias"]
    assert [n for n, _ in m.named_parameters(recurse=False)] == []
    assert m.get_submodule("head.1") is m.head[1]
    with pytest.raises(AttributeError, match="no submodule 'nope'"):
        m.get_submodule("head.nope")
    seen = []
    assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    assert seen == ["Linear", "BatchNorm1d", "ReLU", "Linear", "Sequential", "Block"]


def test_setattr_rules():
    m = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="cannot assign Tensor to parameter 'weight'"):
        m.weight = bg.zeros(3, 2)
    m.bias = None  # an absent parameter, as torch
    assert [n for n, _ in m.named_parameters()] == ["weight"] and m.bias is None
    m.extra = nn.Parameter(bg.zeros(1))
    assert [n for n, _ in m.named_parameters()] == ["weight", "extra"]
    del m.extra
    assert [n for n, _ in m.named_parameters()] == ["weight"] and not hasattr(m, "extra")
    m.plain = bg.zeros(2)  # a plain tensor attribute is neither parameter nor buffer
    assert "plain" not in m.state_dict()
    bn = nn.BatchNorm1d(2)
    bn.running_mean = bg.ones(2)  # reassigning a buffer keeps it a buffer
    assert dict(bn.named_buffers())["running_mean"] is bn.running_mean
    with pytest.raises(TypeError, match="buffer 'running_var'"):
        bn.running_var = [1.0, 1.0]
    with pytest.raises(TypeError, match="expected a Tensor or None"):
        bn.register_buffer("b", np.zeros(2))

    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"must call super\(\).__init__\(\)"):
        Forgot()

    class NoForward(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="NoForward does not define forward"):
        NoForward()(bg.zeros(1))


def test_train_eval_zero_grad_and_repr():
    m = Block()
    assert m.training and m.head[1].training
    assert m.eval() is m and not m.training and not m.norm.training and not m.head[0].training
    m.train()
    assert all(mod.training for mod in m.modules())
    m(bg.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert repr(m) == (
        "Block(\n"
        "  (fc): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (norm): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (head): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Linear(in_features=4, out_features=2, bias=True)\n"
        "  )\n"
        "  (shared): Linear(in_features=3, out_features=4, bias=True)\n"
        ")")


def test_sequential_and_module_list(backend):
    a, b = nn.Linear(3, 5, device=backend), nn.Linear(5, 2, device=backend)
    seq = nn.Sequential(a, nn.Tanh(), b)
    x = bg.randn(4, 3, device=backend)
    expected = b(bg.tanh(a(x))).numpy()
    np.testing.assert_allclose(seq(x).numpy(), expected, rtol=1e-6)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is b and list(seq)[1].__class__ is nn.Tanh
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2 and seq[1:][1] is b
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and [n for n, _ in seq.named_children()] == ["0", "1", "2", "3"]
    named = nn.Sequential(OrderedDict(enc=a, act=nn.ReLU()))
    assert [n for n, _ in named.named_parameters()] == ["enc.weight", "enc.bias"]
    with pytest.raises(TypeError, match="Sequential takes Modules, got int at '1'"):
        nn.Sequential(a, 3)

    ml = nn.ModuleList([nn.Linear(2, 2, device=backend) for _ in range(3)])
    assert len(ml) == 3 and len(list(ml.parameters())) == 6
    assert [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
    ml.append(nn.ReLU()).extend([nn.Tanh()])
    assert len(ml) == 5 and isinstance(ml[-1], nn.Tanh) and isinstance(ml[1:3], nn.ModuleList)
    ml[4] = nn.Sigmoid()
    assert isinstance(ml[4], nn.Sigmoid) and len(ml) == 5
    with pytest.raises(TypeError, match="ModuleList takes Modules"):
        ml.append(lambda x: x)


# --- state_dict / load_state_dict -----------------------------------------------------------

def test_state_dict_round_trip(backend):
    bg.manual_seed(0)
    a, b = Block(backend), Block(backend)
    a(bg.randn(6, 3, device=backend))  # training step: running stats move off their init
    sd = a.state_dict()
    assert list(sd) == ["fc.weight", "fc.bias", "norm.weight", "norm.bias", "norm.running_mean",
                        "norm.running_var", "norm.num_batches_tracked", "head.1.weight", "head.1.bias",
                        "shared.weight", "shared.bias"]
    assert all(isinstance(v, bg.Tensor) and not v.requires_grad and v.is_leaf for v in sd.values())
    assert sd["fc.weight"].array is a.fc.weight.array  # detached, sharing storage
    params_before = {n: id(p) for n, p in b.named_parameters()}
    keys = b.load_state_dict(sd)
    assert keys == nn.IncompatibleKeys([], []) and keys.missing_keys == []
    assert {n: id(p) for n, p in b.named_parameters()} == params_before  # loaded in place
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy(), err_msg=k)
    a.eval(), b.eval()
    x = bg.randn(3, 3, device=backend)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    # host arrays load too, cast to each tensor's dtype
    b.load_state_dict({k: v.numpy().astype(np.float64) for k, v in sd.items()})
    assert b.fc.weight.dtype == np.float32
    np.testing.assert_allclose(b.fc.weight.numpy(), a.fc.weight.numpy())


@pytest.mark.parametrize("problem", ["missing", "unexpected", "shape", "value", "all"])
def test_load_state_dict_errors_load_nothing(problem):
    bg.manual_seed(0)
    src, dst = Block(), Block()
    src(bg.randn(6, 3))
    before = {k: v.numpy() for k, v in dst.state_dict().items()}
    bad = OrderedDict((k, v) for k, v in src.state_dict().items())
    expect = []
    if problem in ("missing", "all"):
        del bad["head.1.bias"]
        expect.append("missing keys (1): head.1.bias")
    if problem in ("unexpected", "all"):
        bad["head.2.weight"] = bg.zeros(1)
        expect.append("unexpected keys (1): head.2.weight")
    if problem in ("shape", "all"):
        bad["head.1.weight"] = bg.zeros(3, 3)
        expect.append("head.1.weight: checkpoint (3, 3) vs model (2, 4)")
    if problem in ("value", "all"):
        bad["norm.running_var"] = "oops"
        expect.append("bad values: norm.running_var: str is not a tensor or array")
    with pytest.raises(RuntimeError) as e:
        dst.load_state_dict(bad)
    msg = str(e.value)
    assert "nothing was loaded" in msg and all(s in msg for s in expect), msg
    for k, v in dst.state_dict().items():  # neither earlier nor later entries were copied
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    with pytest.raises(RuntimeError):
        dst.check_state_dict(bad)


def test_load_state_dict_non_strict():
    m = nn.Linear(3, 2)
    keys = m.load_state_dict({"weight": np.ones((2, 3)), "other": np.zeros(1)}, strict=False)
    assert keys.missing_keys == ["bias"] and keys.unexpected_keys == ["other"]
    assert (m.weight.numpy() == 1).all()
    with pytest.raises(RuntimeError, match=r"weight: checkpoint \(3, 2\) vs model \(2, 3\)"):
        m.load_state_dict({"weight": np.ones((3, 2))}, strict=False)
    assert (m.weight.numpy() == 1).all()


def test_load_state_dict_keeps_optimizer_views():
    m = nn.Linear(3, 2)
    opt = optim.SGD(m.parameters(), lr=0.1)
    m.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.ones(2)})
    assert m.weight.array.base is opt.flat_groups[0].data
    np.testing.assert_array_equal(opt.flat_groups[0].data, [0] * 6 + [1, 1])


# --- .to / deepcopy --------------------------------------------------------------------------

class WithCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.register_buffer("count", bg.tensor([3]))


def test_module_to_moves_in_place_and_keeps_identity(backend):
    m = WithCounter()
    w, b = m.fc.weight, m.fc.bias
    m.fc(bg.ones(1, 2)).sum().backward()
    assert m.to(backend) is m
    assert m.fc.weight is w and w.backend is bg.get_backend(backend) and w.grad.device == w.device
    assert m.count.device == w.device
    m.to(dtype="float64")
    assert w.dtype == np.float64 and b.dtype == np.float64 and w.grad.dtype == np.float64
    assert m.count.dtype == np.int64  # integer buffers keep their dtype
    m.to("float32")  # a dtype string is read as a dtype, as torch's .to(torch.float32)
    assert w.dtype == np.float32
    opt = optim.SGD(m.parameters(), lr=0.5)  # built after moving: sees the moved parameters
    before = w.numpy()
    opt.zero_grad()
    m.fc(bg.ones(1, 2, device=backend)).sum().backward()
    opt.step()
    np.testing.assert_allclose(m.fc.weight.numpy(), before - 0.5, rtol=1e-6)
    with pytest.raises(TypeError, match="floating-point"):
        m.to(dtype="int32")
    assert m.half() is m and w.dtype == np.float16 and m.count.dtype == np.int64
    if bg.bfloat16 is not None:
        assert m.bfloat16() is m and w.dtype == bg.bfloat16 and w.grad.dtype == bg.bfloat16


def test_tensor_to_takes_a_dtype_or_a_tensor_first_as_torch():
    x = bg.ones(3, requires_grad=True)
    assert x.to(bg.float16).dtype == np.float16 and x.to("float64").dtype == np.float64
    other = bg.zeros(2, dtype=bg.float64)
    y = x.to(other)
    assert y.dtype == np.float64 and y.device == other.device
    y.sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.numpy().tolist() == [1, 1, 1]
    assert x.to("cpu", bg.float64).dtype == np.float64


def test_deepcopy_is_independent_and_keeps_backends(backend):
    m = Block(backend)
    c = copy.deepcopy(m)
    assert c.fc.weight is not m.fc.weight and c.fc.weight.backend is m.fc.weight.backend
    assert c.shared is c.fc and c.norm.running_mean.backend is m.norm.running_mean.backend
    np.testing.assert_array_equal(c.fc.weight.numpy(), m.fc.weight.numpy())
    with bg.no_grad():
        c.fc.weight.fill_(0)
    assert m.fc.weight.numpy().any()


# --- Linear ----------------------------------------------------------------------------

def test_linear_init_shape_and_forward(backend):
    bg.manual_seed(1)
    lin = nn.Linear(500, 300, device=backend)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    bound = 1 / np.sqrt(500)
    assert lin.weight.shape == (300, 500) and lin.bias.shape == (300,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound and abs(w.mean()) < 0.01 * bound
    x = np.random.default_rng(0).standard_normal((4, 500)).astype(np.float32)
    y = lin(bg.tensor(x, device=backend))
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-4, atol=1e-5)
    assert y.dtype == np.float32 and y.grad_fn.op.name == "linear"  # one fused op
    assert [t is p for t, p in zip(y.grad_fn.inputs[1:], (lin.weight, lin.bias))] == [True, True]
    nb = nn.Linear(3, 2, bias=False, device=backend)
    assert nb.bias is None and [n for n, _ in nb.named_parameters()] == ["weight"]
    assert repr(nb) == "Linear(in_features=3, out_features=2, bias=False)"


def test_linear_gradients(backend):
    rng = np.random.default_rng(0)
    x, w, b = (x64(backend, rng.standard_normal(s)) for s in ((2, 3, 4), (5, 4), (5,)))
    assert bg.gradcheck(lambda x, w, b: F.linear(x, w, b), [x, w, b])
    assert bg.gradcheck(lambda x, w: F.linear(x, w), [x, w])
    y = F.linear(x, w, b)
    g = rng.standard_normal((2, 3, 5))
    y.backward(bg.tensor(g, device=backend))
    xn, wn = x.numpy(), w.numpy()
    np.testing.assert_allclose(x.grad.numpy(), g @ wn, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), g.reshape(-1, 5).T @ xn.reshape(-1, 4), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), g.sum((0, 1)), rtol=1e-12)
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 4\) does not fit weight of shape \(4, 5\)"):
        F.linear(x, x64(backend, np.zeros((4, 5))))
    with pytest.raises(ValueError, match=r"bias of shape \(4,\) does not fit weight of shape \(5, 4\)"):
        F.linear(x, w, x64(backend, np.zeros(4)))


# --- activations and simple layers ----------------------------------------------------------

_C = math.sqrt(2 / math.pi)
ACTIVATIONS = [
    ("relu", nn.ReLU(), lambda x: np.maximum(x, 0)),
    ("tanh", nn.Tanh(), np.tanh),
    ("sigmoid", nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    ("gelu", nn.GELU(), lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))),
    ("gelu_tanh", nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x ** 3)))),
    ("leaky_relu", nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("softplus", nn.Softplus(), lambda x: np.log1p(np.exp(x))),
    ("identity", nn.Identity(), lambda x: x),
    ("softmax", nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
]


@pytest.mark.parametrize("name,layer,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_layers(backend, name, layer, ref):
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((3, 5)) * 2
    xn[np.abs(xn) < 1e-3] = 0.5  # keep finite differences away from the kinks
    x = x64(backend, xn)
    np.testing.assert_allclose(layer(x).numpy(), ref(xn), rtol=1e-10, atol=1e-12)
    if name != "identity":
        assert bg.gradcheck(layer, [x])
    else:
        assert layer(x) is x


def test_functional_activation_reexports(backend):
    x = x64(backend, [[-1.0, 0.5, 2.0]])
    np.testing.assert_allclose(F.relu(x).numpy(), [[0, 0.5, 2]])
    np.testing.assert_allclose(F.softmax(x, dim=1).numpy(), F.softmax(x, axis=-1).numpy())
    np.testing.assert_allclose(bg.exp(F.log_softmax(x, dim=1)).numpy(), F.softmax(x, dim=1).numpy(), rtol=1e-12)
    for f in (F.gelu, F.sigmoid, F.tanh, F.leaky_relu, F.softplus):
        assert f(x).shape == (1, 3)


def test_flatten(backend):
    x = x64(backend, np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    y = nn.Flatten()(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy().reshape(2, 60))
    y.backward(bg.tensor(np.arange(120.0).reshape(2, 60), device=backend))
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(120.0).reshape(2, 3, 4, 5))


# --- Dropout ---------------------------------------------------------------------------------

def test_dropout_train_and_eval(backend):
    d = nn.Dropout(0.25)
    x = bg.ones(20000, device=backend, requires_grad=True)
    y = d(x)
    yn = y.numpy()
    assert abs((yn == 0).mean() - 0.25) < 0.015
    np.testing.assert_allclose(np.unique(yn), [0, 1 / 0.75], rtol=1e-6)
    assert abs(yn.mean() - 1) < 0.03  # inverted dropout keeps the expectation
    y.backward(bg.ones(20000, device=backend))
    np.testing.assert_array_equal(x.grad.numpy(), yn)  # the gradient is the same mask
    bg.manual_seed(7)
    a = d(x).numpy()
    bg.manual_seed(7)
    np.testing.assert_array_equal(d(x).numpy(), a)  # reproducible from the seed
    assert not np.array_equal(d(x).numpy(), a)
    d.eval()
    assert not d.training and d(x) is x
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).numpy().any()
    for p in (1.5, -0.1, "0.5"):
        with pytest.raises(ValueError, match="dropout probability"):
            nn.Dropout(p)


def test_dropout_gradcheck(backend):
    x = x64(backend, np.random.default_rng(0).standard_normal((4, 5)))

    def f(x):
        bg.manual_seed(3)  # the same mask on every call
        return F.dropout(x, 0.4)

    assert bg.gradcheck(f, [x])


# --- LayerNorm -------------------------------------------------------------------------------

def _np_layer_norm(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def test_layer_norm(backend):
    rng = np.random.default_rng(1)
    x, w, b = x64(backend, rng.standard_normal((3, 4))), x64(backend, rng.random(4) + 0.5), x64(backend, rng.random(4))
    np.testing.assert_allclose(F.layer_norm(x, 4, w, b).numpy(), _np_layer_norm(x.numpy(), 1, w.numpy(), b.numpy()),
                               rtol=1e-10)
    assert bg.gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), [x, w, b])
    x3 = x64(backend, rng.standard_normal((2, 3, 4)) * 3 + 1)
    ln = nn.LayerNorm((3, 4), device=backend, dtype="float64")
    assert ln.weight.shape == (3, 4) and (ln.weight.numpy() == 1).all() and not ln.bias.numpy().any()
    np.testing.assert_allclose(ln(x3).numpy(), _np_layer_norm(x3.numpy(), 2), rtol=1e-10, atol=1e-12)
    assert bg.gradcheck(lambda x: F.layer_norm(x, (3, 4)), [x3])
    plain = nn.LayerNorm(4, elementwise_affine=False)
    assert list(plain.parameters()) == [] and repr(plain) == "LayerNorm((4,), eps=1e-05, elementwise_affine=False)"
    with pytest.raises(ValueError, match=r"input shape \(2, 3, 4\) does not end in normalized_shape \(3,\)"):
        F.layer_norm(x3, 3)


# --- BatchNorm -------------------------------------------------------------------------------

def test_batch_norm_train_updates_running_stats_and_eval_uses_them(backend):
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3, momentum=0.1, device=backend)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(2):
        xn = (rng.standard_normal((8, 3)) * 2 + 1).astype(np.float32)
        y = bn(bg.tensor(xn, device=backend)).numpy()
        np.testing.assert_allclose(y, (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
        rm, rv = 0.9 * rm + 0.1 * xn.mean(0), 0.9 * rv + 0.1 * xn.var(0, ddof=1)  # unbiased, as torch
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-5)
    bn.eval()
    xn = rng.standard_normal((5, 3)).astype(np.float32)
    y2 = bn(bg.tensor(xn, device=backend)).numpy()
    np.testing.assert_allclose(y2, (xn - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-5)  # eval leaves them alone
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\) got input of shape \(2, 4\)"):
        bn(bg.zeros(2, 4, device=backend))
    bn.train()
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(bg.zeros(1, 3, device=backend))


def test_batch_norm_three_dims_and_gradients(backend):
    rng = np.random.default_rng(4)
    bn = nn.BatchNorm1d(2, momentum=0.3, device=backend, dtype="float64")
    with bg.no_grad():
        bn.weight.copy_(np.array([1.5, 0.5]))
        bn.bias.copy_(np.array([0.1, -0.2]))
    xn = rng.standard_normal((4, 2, 3)) * 2 + 3
    x = x64(backend, xn)
    mu, var = xn.mean((0, 2), keepdims=True), xn.var((0, 2), keepdims=True)
    ref = (xn - mu) / np.sqrt(var + 1e-5) * np.array([1.5, 0.5])[:, None] + np.array([0.1, -0.2])[:, None]
    np.testing.assert_allclose(bn(x).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.3 * mu.ravel(), rtol=1e-10)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.7 + 0.3 * xn.var((0, 2), ddof=1), rtol=1e-10)
    w, b = bn.weight, bn.bias
    assert bg.gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b])
    rm, rv = bn.running_mean, bn.running_var
    assert bg.gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), [x, w, b])
    free = nn.BatchNorm1d(2, track_running_stats=False, affine=False, device=backend)
    assert list(free.parameters()) == [] and list(free.named_buffers()) == []
    free.eval()  # no running stats: batch statistics even in eval
    out = free(bg.tensor(xn.astype(np.float32), device=backend)).numpy()
    np.testing.assert_allclose(out, (xn - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\] or None .*got 1.5"):
        nn.BatchNorm1d(2, momentum=1.5)


# --- Embedding -------------------------------------------------------------------------------

def test_embedding_lookup_and_scatter_add(backend):
    emb = nn.Embedding(5, 2, device=backend)
    assert emb.weight.shape == (5, 2) and isinstance(emb.weight, nn.Parameter)
    idx = bg.tensor(np.array([[1, 3], [1, 1]]), device=backend)
    out = emb(idx)
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[[[1, 3], [1, 1]]])
    g = np.arange(8.0).reshape(2, 2, 2)
    out.backward(bg.tensor(g.astype(np.float32), device=backend))
    expected = np.zeros((5, 2))
    np.add.at(expected, np.array([[1, 3], [1, 1]]), g)
    np.testing.assert_allclose(emb.weight.grad.numpy(), expected)  # row 1 gets three contributions
    np.testing.assert_array_equal(emb([4, 0]).numpy(), emb.weight.numpy()[[4, 0]])
    with pytest.raises(IndexError, match=r"Embedding\(5\) got indices in \[0, 7\]"):
        emb(bg.tensor([0, 7], device=backend)).numpy()  # on a GPU the check reports at the next sync
    with pytest.raises(TypeError, match="integer indices, got dtype float32"):
        emb(bg.zeros(2, device=backend))


def test_embedding_gradcheck(backend):
    emb = nn.Embedding(4, 3, device=backend, dtype="float64")
    idx = bg.tensor([0, 2, 2, 3], device=backend)
    assert bg.gradcheck(lambda w: (w[idx] ** 2).sum(axis=1), [emb.weight])


# --- init --------------------------------------------------------------------------------------

def _std(t):
    return float(t.numpy().std())


def test_initialiser_statistics(backend):
    bg.manual_seed(3)
    t = bg.empty(400, 600, device=backend)  # fan_in 600, fan_out 400
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(_std(t) - math.sqrt(2 / 600)) < 0.02 * math.sqrt(2 / 600) and abs(t.numpy().mean()) < 1e-3
    nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="tanh")
    assert abs(_std(t) - 5 / 3 / math.sqrt(400)) < 0.02 * 5 / 3 / math.sqrt(400)
    nn.init.kaiming_uniform_(t)  # leaky_relu with a=0: gain sqrt(2), bound sqrt(6 / fan_in)
    bound = math.sqrt(6 / 600)
    assert np.abs(t.numpy()).max() <= bound and np.abs(t.numpy()).max() > 0.99 * bound
    assert abs(_std(t) - bound / math.sqrt(3)) < 0.02 * bound
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))  # Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(t.numpy()).max() <= 1 / math.sqrt(600) * (1 + 1e-6)
    nn.init.xavier_uniform_(t, gain=nn.init.calculate_gain("relu"))
    a = math.sqrt(2) * math.sqrt(6 / 1000)
    assert np.abs(t.numpy()).max() <= a and abs(_std(t) - a / math.sqrt(3)) < 0.02 * a
    nn.init.xavier_normal_(t, gain=2.0)
    assert abs(_std(t) - 2 * math.sqrt(2 / 1000)) < 0.02 * 2 * math.sqrt(2 / 1000)
    nn.init.normal_(t, mean=3.0, std=0.5)
    assert abs(t.numpy().mean() - 3) < 0.005 and abs(_std(t) - 0.5) < 0.01
    nn.init.uniform_(t, -2.0, 4.0)
    tn = t.numpy()
    assert tn.min() >= -2 and tn.max() < 4 and abs(tn.mean() - 1) < 0.02 and abs(tn.std() - 6 / math.sqrt(12)) < 0.02
    assert (nn.init.zeros_(t).numpy() == 0).all() and (nn.init.ones_(t).numpy() == 1).all()
    assert (nn.init.constant_(t, 0.25).numpy() == 0.25).all() and t.dtype == np.float32


def test_initialiser_fans_gains_and_errors():
    conv = bg.empty(16, 8, 3, 3)  # fan_in 8*9 = 72, fan_out 16*9 = 144
    assert nn.init._calculate_fan_in_and_fan_out(conv) == (72, 144)
    nn.init.xavier_uniform_(conv)
    assert np.abs(conv.numpy()).max() <= math.sqrt(6 / (72 + 144))
    assert nn.init.calculate_gain("linear") == 1 and nn.init.calculate_gain("sigmoid") == 1
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.calculate_gain("selu") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        nn.init.calculate_gain("swish")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(bg.empty(3))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        nn.init.kaiming_uniform_(conv, mode="fan_avg")


def test_initialisers_are_in_place_seeded_and_leave_the_graph_alone(backend):
    p = nn.Parameter(bg.empty(50, 40, device=backend))
    bg.manual_seed(11)
    assert nn.init.kaiming_uniform_(p) is p
    first = p.numpy()
    bg.manual_seed(11)
    nn.init.kaiming_uniform_(p)
    np.testing.assert_array_equal(p.numpy(), first)  # reproducible with bg.manual_seed
    assert p.requires_grad and p.is_leaf and p.grad is None
    y = (p * 2).sum()
    nn.init.zeros_(p)  # in place on a saved tensor: the version check notices
    with pytest.raises(RuntimeError):
        y.backward()
    bg.manual_seed(11)
    lin_a = nn.Linear(6, 4, device=backend)
    bg.manual_seed(11)
    lin_b = nn.Linear(6, 4, device=backend)
    np.testing.assert_array_equal(lin_a.weight.numpy(), lin_b.weight.numpy())


def test_initialisers_match_torch_fans():
    torch = pytest.importorskip("torch")
    for shape in ((30, 20), (16, 8, 3, 3), (5, 7, 2)):
        ours = nn.init._calculate_fan_in_and_fan_out(bg.empty(*shape))
        assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    for nl, a in (("relu", None), ("leaky_relu", None), ("leaky_relu", math.sqrt(5)), ("tanh", None)):
        assert nn.init.calculate_gain(nl, a) == pytest.approx(torch.nn.init.calculate_gain(nl, a))


# --- training ----------------------------------------------------------------------------------

def test_a_small_regression_trains_with_plain_gradient_steps(backend):
    bg.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X @ np.array([1.5, -2.0, 0.5], np.float32) + 0.3)[:, None]
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).to(backend)
    xt, yt = bg.tensor(X, device=backend), bg.tensor(y, device=backend)
    losses = []
    for _ in range(200):
        model.zero_grad()
        loss = F.mse_loss(model(xt), yt)
        loss.backward()
        with bg.no_grad():
            for p in model.parameters():
                p -= 0.2 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0] and losses[-1] < 0.03, (losses[0], losses[-1])
    assert losses[50] < 0.5 * losses[0] and losses[150] > losses[-1]
