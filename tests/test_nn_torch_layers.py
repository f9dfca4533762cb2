"""Conv1d, GroupNorm, InstanceNorm1d/2d, the adaptive poolings, ParameterList/ParameterDict, KLDivLoss,
class weights of CrossEntropyLoss/NLLLoss and Upsample: gradients against finite differences (float64)
on every backend, and values, gradients and state_dict keys against torch (its weights loaded through
``load_state_dict``) where installed."""
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
import recording_cupy
from backprop_gpu import nn, optim
from helpers import x64

rng = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch")


def _same_as_torch(ours, theirs, backend, inputs, tol=1e-10):
    """Load torch module ``theirs``'s state into ``ours`` (strictly: the keys must be torch's), run
    both on the float64 ``inputs`` with a random cotangent, and compare the outputs and the
    gradients of the inputs and of every parameter, by name."""
    torch = _torch()
    theirs, ours = theirs.double(), ours.double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    xs = [x64(backend, a) for a in inputs]
    ts = [torch.tensor(a, requires_grad=True) for a in inputs]
    y, yt = ours(*xs), theirs(*ts)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
    g = rng.standard_normal(tuple(yt.shape))
    (y * bg.tensor(g, device=backend)).sum().backward()
    (yt * torch.tensor(g)).sum().backward()
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol, atol=tol)
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_grads[name].grad.numpy(), rtol=tol, atol=tol,
                                   err_msg=name)


# --- Conv1d -------------------------------------------------------------------------------------

CONV1D = [dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, padding="same"),
          dict(kernel_size=5, padding="same", bias=False), dict(kernel_size=4, padding="valid", stride=3),
          dict(kernel_size=(1,), stride=(2,), padding=(2,))]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("kw", CONV1D, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv1d_gradients_and_torch(backend, kw):
    fn = lambda x, w, *b: F.conv1d(x, w, b[0] if b else None, kw.get("stride", 1), kw.get("padding", 0))  # noqa
    x, w, b = x64(backend, rng.standard_normal((2, 3, 9))), x64(backend, rng.standard_normal((4, 3, 3))), \
        x64(backend, rng.standard_normal(4))
    assert bg.gradcheck(fn, [x, w, b])
    torch = pytest.importorskip("torch")
    ours = nn.Conv1d(3, 4, device=backend, dtype="float64", **kw)
    assert ours.weight.shape == tuple(torch.nn.Conv1d(3, 4, **kw).weight.shape)
    _same_as_torch(ours, torch.nn.Conv1d(3, 4, **kw), backend, [rng.standard_normal((2, 3, 9))])


def test_conv1d_unbatched_and_init(backend):
    m = nn.Conv1d(2, 3, 3, device=backend)
    bound = 1 / np.sqrt(2 * 3)  # torch's: kaiming_uniform_(a=sqrt(5)) and the bias alike
    assert np.abs(m.weight.numpy()).max() <= bound and np.abs(m.bias.numpy()).max() <= bound
    x = bg.tensor(rng.standard_normal((2, 7)).astype(np.float32), device=backend)
    np.testing.assert_allclose(m(x).numpy(), m(x.unsqueeze(0)).numpy()[0], rtol=1e-6)
    assert m(x).shape == (3, 5)


def test_conv1d_errors():
    x = bg.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=r"input \(2, 3, 5\) and weight \(4, 2, 3\) do not fit"):
        F.conv1d(x, bg.zeros(4, 2, 3))
    with pytest.raises(ValueError, match="kernel size 7 does not fit padded input of length 5"):
        F.conv1d(x, bg.zeros(4, 3, 7))
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) does not fit weight \(4, 3, 3\)"):
        F.conv1d(x, bg.zeros(4, 3, 3), bg.zeros(3))
    with pytest.raises(ValueError, match="'same' is not supported for strided convolutions"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"Conv1d\(3, 4\) got input of shape \(2, 2, 5\); expected \(N, 3, L\)"):
        nn.Conv1d(3, 4, 3)(bg.zeros(2, 2, 5))
    with pytest.raises(NotImplementedError, match="groups=2 is not supported"):
        nn.Conv1d(4, 4, 3, groups=2)
    with pytest.raises(NotImplementedError, match="dilation=2 is not supported"):
        F.conv1d(x, bg.zeros(4, 3, 3), dilation=2)


# --- GroupNorm and InstanceNorm --------------------------------------------------------------------

@pytest.mark.parametrize("shape,groups,affine", [((3, 6, 5), 3, True), ((2, 4, 3, 3), 2, False),
                                                 ((2, 4, 3, 2), 4, True), ((3, 4), 1, True)])
def test_group_norm_gradients_and_torch(backend, shape, groups, affine):
    c = shape[1]
    x = x64(backend, rng.standard_normal(shape) * 3 + 1)
    w, b = x64(backend, rng.standard_normal(c)), x64(backend, rng.standard_normal(c))
    assert bg.gradcheck(lambda x, w, b: F.group_norm(x, groups, w, b), [x, w, b])
    assert bg.gradcheck(lambda x: F.group_norm(x, groups, eps=0.1), [x])
    torch = pytest.importorskip("torch")
    theirs = torch.nn.GroupNorm(groups, c, affine=affine)
    if affine:  # not the init's ones and zeros, so that the affine part is checked too
        theirs.load_state_dict({"weight": torch.tensor(rng.standard_normal(c)), "bias": torch.randn(c)})
    _same_as_torch(nn.GroupNorm(groups, c, affine=affine, device=backend), theirs, backend,
                   [rng.standard_normal(shape) * 2])


def test_group_norm_second_order(backend):
    x, w = x64(backend, rng.standard_normal((2, 4, 3))), x64(backend, rng.standard_normal(4))

    def grad_norm(x, w):
        (gx,) = bg.grad((bg.tanh(F.group_norm(x, 2, w)) ** 2).sum(), x, create_graph=True)
        return (gx * gx).sum()
    assert bg.gradcheck(grad_norm, [x, w])


def test_group_norm_float32_and_errors(backend):
    xn = rng.standard_normal((4, 6, 8)).astype(np.float32) * 10 + 5
    m = nn.GroupNorm(3, 6, device=backend)
    y = m(bg.tensor(xn, device=backend)).numpy()
    g = xn.reshape(4, 3, -1)
    ref = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + 1e-5)).reshape(xn.shape)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"GroupNorm\(3, 6\) got input of shape \(4, 5, 8\)"):
        m(bg.zeros(4, 5, 8))
    with pytest.raises(ValueError, match=r"channels of input \(2, 5, 3\) are not divisible into num_groups=2"):
        F.group_norm(bg.zeros(2, 5, 3), 2)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(6,\)"):
        F.group_norm(bg.zeros(2, 6, 3), 2, bg.ones(4))


@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (3, 4, 6)), ("InstanceNorm2d", (2, 3, 4, 3)),
                                       ("InstanceNorm1d", (4, 5)), ("InstanceNorm2d", (3, 4, 2))])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_gradients_and_torch(backend, cls, shape, affine):
    batched = len(shape) == (3 if cls == "InstanceNorm1d" else 4)
    c = shape[1] if batched else shape[0]
    x = x64(backend, rng.standard_normal(shape))
    m = getattr(nn, cls)(c, affine=affine, device=backend, dtype="float64")
    assert bg.gradcheck(lambda x: m(x), [x])
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, cls)(c, affine=affine)
    if affine:
        theirs.load_state_dict({"weight": torch.randn(c), "bias": torch.randn(c)})
    _same_as_torch(m, theirs, backend, [rng.standard_normal(shape) * 2 - 1])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_instance_norm_running_stats_follow_torch(backend, momentum):
    torch = _torch()
    ours = nn.InstanceNorm2d(3, momentum=momentum, affine=True, track_running_stats=True, device=backend,
                             dtype="float64")
    theirs = torch.nn.InstanceNorm2d(3, momentum=momentum, affine=True, track_running_stats=True).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for _ in range(3):
        xn = rng.standard_normal((4, 3, 3, 5)) * 2 + 1
        y, yt = ours(bg.tensor(xn, device=backend)), theirs(torch.tensor(xn))
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(theirs, name).numpy(), rtol=1e-12,
                                   err_msg=name)
    ours.eval(), theirs.eval()
    _same_as_torch(ours, theirs, backend, [rng.standard_normal((2, 3, 3, 5))])


def test_instance_norm_errors_and_warning():
    with pytest.raises(ValueError, match=r"InstanceNorm2d\(3\) expected 3-d \(unbatched\) or 4-d input, "
                                         r"got input of shape \(2, 3\)"):
        nn.InstanceNorm2d(3)(bg.zeros(2, 3))
    with pytest.raises(ValueError, match=r"size at dim=1 to match num_features \(3\), but got: 4"):
        nn.InstanceNorm1d(3, affine=True)(bg.zeros(2, 4, 5))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(3)(bg.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"more than 1 spatial element when training, got input \(2, 3, 1\)"):
        F.instance_norm(bg.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="use_input_stats=False needs running_mean and running_var"):
        F.instance_norm(bg.zeros(2, 3, 4), use_input_stats=False)


# --- adaptive pooling ---------------------------------------------------------------------------------

POOL2D = [(3, 4), 1, (None, 3), (7, 10), 5, (9, 13), (2, None), (4, 1)]


@pytest.mark.parametrize("output_size", POOL2D, ids=str)
@pytest.mark.parametrize("kind", ["Avg", "Max"])
def test_adaptive_pool2d_gradients_and_torch(backend, kind, output_size):
    f = getattr(F, f"adaptive_{kind.lower()}_pool2d")
    x = x64(backend, rng.standard_normal((2, 2, 7, 10)))
    assert bg.gradcheck(lambda x: f(x, output_size), [x])
    torch = pytest.importorskip("torch")
    name = f"Adaptive{kind}Pool2d"
    _same_as_torch(getattr(nn, name)(output_size), getattr(torch.nn, name)(output_size), backend,
                   [rng.standard_normal((2, 3, 7, 10))])
    _same_as_torch(getattr(nn, name)(output_size), getattr(torch.nn, name)(output_size), backend,
                   [rng.standard_normal((3, 7, 10))])  # unbatched


@pytest.mark.parametrize("output_size", [1, 3, 4, 6, 11])
@pytest.mark.parametrize("kind", ["Avg", "Max"])
def test_adaptive_pool1d_gradients_and_torch(backend, kind, output_size):
    f = getattr(F, f"adaptive_{kind.lower()}_pool1d")
    x = x64(backend, rng.standard_normal((2, 3, 8)))
    assert bg.gradcheck(lambda x: f(x, output_size), [x])
    torch = pytest.importorskip("torch")
    name = f"Adaptive{kind}Pool1d"
    _same_as_torch(getattr(nn, name)(output_size), getattr(torch.nn, name)(output_size), backend,
                   [rng.standard_normal((2, 3, 8))])


@pytest.mark.parametrize("f", [F.adaptive_max_pool2d, F.adaptive_avg_pool2d], ids=["max", "avg"])
def test_adaptive_pool_second_order(backend, f):
    x = x64(backend, rng.standard_normal((2, 2, 7, 5)))

    def grad_norm(x):  # the windows' gather and scatter recorded under create_graph
        (gx,) = bg.grad((bg.tanh(f(x, (3, 4))) ** 3).sum(), x, create_graph=True)
        return (gx * gx).sum()
    assert bg.gradcheck(grad_norm, [x])


def test_adaptive_max_pool_ties_send_the_gradient_where_torch_does(backend):
    torch = _torch()
    xn = np.round(rng.standard_normal((2, 2, 7, 6)) * 0.6)  # many equal values in each window
    for out in [(3, 4), (2, 2), 1, (9, 8)]:
        _same_as_torch(nn.AdaptiveMaxPool2d(out), torch.nn.AdaptiveMaxPool2d(out), backend, [xn])


def test_adaptive_pool_float32_and_errors(backend):
    xn = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = F.adaptive_avg_pool2d(bg.tensor(xn, device=backend), 1)
    assert y.dtype == np.float32 and y.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(y.numpy()[..., 0, 0], xn.mean((2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C, H, W\) or \(C, H, W\), got \(9, 9\)"):
        F.adaptive_avg_pool2d(bg.zeros(9, 9), 2)
    with pytest.raises(ValueError, match=r"output_size must be an int or a 2-tuple"):
        F.adaptive_max_pool2d(bg.zeros(1, 1, 4, 4), (1, 2, 3))
    with pytest.raises(ValueError, match=r"output_size \(0, 2\) and the input's spatial size \(4, 4\) must be "
                                         "positive"):
        F.adaptive_avg_pool2d(bg.zeros(1, 1, 4, 4), (0, 2))
    with pytest.raises(TypeError, match="adaptive_avg_pool1d: input must be floating point, got dtype int64"):
        F.adaptive_avg_pool1d(bg.tensor(np.arange(6).reshape(1, 1, 6)), 2)
    with pytest.raises(NotImplementedError, match="return_indices=True is not supported"):
        nn.AdaptiveMaxPool2d(2, return_indices=True)


# --- ParameterList and ParameterDict ------------------------------------------------------------------

class _Holder:
    """The same model in either library: a ParameterList and a ParameterDict beside a Linear."""

    @staticmethod
    def build(lib):
        class M(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = lib.nn.Linear(3, 2)
                self.plist = lib.nn.ParameterList([lib.nn.Parameter(lib.zeros(2, 3)), lib.zeros(3)])
                self.plist.append(lib.ones(1))
                self.plist.extend([lib.zeros(2)])
                self.pdict = lib.nn.ParameterDict({"beta": lib.zeros(2), "alpha": lib.ones(3)})
                self.pdict["gamma"] = lib.nn.Parameter(lib.ones(4))
                self.pdict.update(OrderedDict([("z", lib.zeros(1)), ("y", lib.zeros(1))]))

            def forward(self, x):
                return self.fc(x) * self.plist[-1] + self.pdict["beta"].sum()
        return M()


def test_parameter_containers_register_like_torch(backend):
    ours = _Holder.build(bg).to(backend)
    names = [n for n, _ in ours.named_parameters()]
    assert names == ["fc.weight", "fc.bias", "plist.0", "plist.1", "plist.2", "plist.3", "pdict.alpha",
                     "pdict.beta", "pdict.gamma", "pdict.z", "pdict.y"]  # a plain dict is added sorted
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in ours.parameters())
    pl, pd = ours.plist, ours.pdict
    assert len(pl) == 4 and pl[-1] is pl[3] and [p.shape for p in pl[1:3]] == [(3,), (1,)]
    assert isinstance(pl[::2], nn.ParameterList) and len(pl[::2]) == 2
    t = bg.tensor(np.arange(3.0), device=backend)
    pl[1] = t
    assert isinstance(pl[1], nn.Parameter) and pl[1].array is t.array  # wraps, sharing storage
    assert list(pd) == ["alpha", "beta", "gamma", "z", "y"] and "gamma" in pd and len(pd) == 5
    assert pd.get("nope") is None and pd.pop("z").shape == (1,) and "pdict.z" not in ours.state_dict()
    assert pd.popitem()[0] == "y" and list(pd.keys()) == ["alpha", "beta", "gamma"]
    assert pd.setdefault("delta", bg.zeros(2)) is pd["delta"] and list(pd)[-1] == "delta"
    del pd["delta"]
    assert [k for k, _ in pd.items()] == list(pd.copy()) == ["alpha", "beta", "gamma"]
    opt = bg.optim.SGD(ours.parameters(), lr=0.1)
    x = bg.tensor(rng.standard_normal((4, 3)).astype(np.float32), device=backend)
    loss = ours(x).sum()
    loss.backward()
    opt.step()
    assert ours.plist[-1].grad is not None and ours.pdict["beta"].grad is not None


def test_parameter_containers_load_torch_state_dicts():
    torch = _torch()
    ours, theirs = _Holder.build(bg), _Holder.build(torch)
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(sd)
    ours.load_state_dict(sd)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(bg.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6)


def test_parameter_container_errors():
    pl, pd = nn.ParameterList(), nn.ParameterDict()
    with pytest.raises(IndexError, match="index 0 is out of range for a ParameterList of length 0"):
        pl[0]
    with pytest.raises(TypeError, match="extend should be called with an iterable, but got int"):
        pl.extend(3)
    with pytest.raises(RuntimeError, match="ParameterList should not be called"):
        pl(bg.zeros(1))
    with pytest.raises(TypeError, match="not a string \\(type is 'int'\\)"):
        pd[1] = bg.zeros(1)
    with pytest.raises(KeyError, match="would shadow"):
        pd["keys"] = bg.zeros(1)
    with pytest.raises(ValueError, match="element #1 should be a \\(key, value\\) pair"):
        pd.update([("a", bg.zeros(1)), bg.zeros(2)])
    assert len(pd) == 0  # checked before anything was added
    with pytest.raises(KeyError, match="missing"):
        pd["missing"]


# --- KLDivLoss ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none", "mean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_gradients_and_torch(backend, reduction, log_target):
    logits, tlogits = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    inp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    tgt = np.exp(tlogits) / np.exp(tlogits).sum(1, keepdims=True)
    if log_target:
        tgt = np.log(tgt)
    else:
        tgt[0, :2] = 0  # zero probabilities contribute nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if reduction == "mean" else "error")
        fn = lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target)  # noqa: E731
        # finite differences in the target only away from zero targets (log of a negative one is NaN)
        assert bg.gradcheck(fn, [x64(backend, inp), x64(backend, tgt, grad=log_target)])
        if not log_target:
            assert bg.gradcheck(fn, [x64(backend, inp), x64(backend, np.abs(tgt) + 0.1)])
        x, t = x64(backend, inp), x64(backend, tgt)
        torch = pytest.importorskip("torch")
        xt, tt = torch.tensor(inp, requires_grad=True), torch.tensor(tgt, requires_grad=True)
        ours = nn.KLDivLoss(reduction=reduction, log_target=log_target)(x, t)
        theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)(xt, tt)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    g = rng.standard_normal(tuple(theirs.shape))
    (ours * bg.tensor(g, device=backend)).sum().backward()
    (theirs * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    # at a zero target torch's gradient in the target is 0/0 = NaN (of xlogy); ours is finite, -input
    counted = tgt != 0
    np.testing.assert_allclose(t.grad.numpy()[counted], tt.grad.numpy()[counted], rtol=1e-12, atol=1e-14)


def test_kl_div_mean_warns_and_errors():
    x, t = bg.zeros(2, 3), bg.ones(2, 3) / 3
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        F.kl_div(x, t)
    with pytest.raises(ValueError, match="reduction must be one of .*'batchmean'.*, got 'avg'"):
        nn.KLDivLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) and target shape \(3,\) differ"):
        F.kl_div(x, bg.ones(3), reduction="sum")
    with pytest.raises(NotImplementedError, match="size_average"):
        nn.KLDivLoss(size_average=True)


# --- class weights of CrossEntropyLoss and NLLLoss -------------------------------------------------------

WEIGHTED = [("CrossEntropyLoss", -100, 0.0), ("CrossEntropyLoss", 1, 0.0), ("CrossEntropyLoss", 2, 0.2),
            ("CrossEntropyLoss", -100, 0.1), ("NLLLoss", -100, 0.0), ("NLLLoss", 3, 0.0)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss,ignore,smoothing", WEIGHTED)
def test_class_weights_gradients_and_torch(backend, loss, reduction, ignore, smoothing):
    xn, tn, wn = rng.standard_normal((6, 4)), np.array([0, 1, 2, 3, 1, 2]), rng.random(4) + 0.5
    if loss == "NLLLoss":
        xn = xn - np.log(np.exp(xn).sum(1, keepdims=True))
    kw = dict(reduction=reduction, ignore_index=ignore)
    if smoothing:
        kw["label_smoothing"] = smoothing
    t, w = bg.tensor(tn, device=backend), x64(backend, wn, grad=False)
    fn = getattr(F, "cross_entropy" if loss == "CrossEntropyLoss" else "nll_loss")
    assert bg.gradcheck(lambda x: fn(x, t, w, **kw), [x64(backend, xn)])
    torch = pytest.importorskip("torch")
    ours = getattr(nn, loss)(weight=w, **kw)
    theirs = getattr(torch.nn, loss)(weight=torch.tensor(wn), **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    x, xt = x64(backend, xn), torch.tensor(xn, requires_grad=True)
    y, yt = ours(x, t), theirs(xt, torch.tensor(tn))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the 0/0 of no counted row
def test_class_weights_match_the_unweighted_op_and_check_their_shape(backend):
    xn, tn = rng.standard_normal((5, 3)), np.array([0, 2, 1, 1, -100])
    x, t = x64(backend, xn, grad=False), bg.tensor(tn, device=backend)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(F.cross_entropy(x, t, bg.ones(3, device=backend), reduction=reduction).numpy(),
                                   F.cross_entropy(x, t, reduction=reduction).numpy(), rtol=1e-12)
    all_ignored = F.nll_loss(x, bg.tensor(np.full(5, -100), device=backend), bg.ones(3, device=backend))
    assert np.isnan(all_ignored.item())  # 0/0, as torch
    with pytest.raises(ValueError, match=r"weight tensor should be defined either for all 3 classes or no classes "
                                         r"but got weight tensor of shape \(2,\)"):
        F.cross_entropy(x, t, bg.ones(2, device=backend))
    with pytest.raises(NotImplementedError, match="size_average"):
        F.nll_loss(x, t, size_average=True)


# --- Upsample / interpolate (nearest) ------------------------------------------------------------------

RESIZE = [((2, 3, 4, 5), dict(scale_factor=2)), ((2, 3, 4, 5), dict(scale_factor=3)),
          ((2, 3, 4, 5), dict(size=(7, 3))), ((2, 3, 5), dict(scale_factor=1.7)),
          ((1, 2, 3, 4), dict(scale_factor=(2, 1.5))),
          ((1, 2, 3, 4), dict(scale_factor=2.5, recompute_scale_factor=True)),
          ((1, 1, 2, 3, 3), dict(size=(3, 5, 2))), ((1, 2, 7, 7), dict(size=3))]


@pytest.mark.parametrize("shape,kw", RESIZE, ids=lambda v: str(v))
def test_upsample_nearest_gradients_and_torch(backend, shape, kw):
    assert bg.gradcheck(lambda x: F.interpolate(x, **kw), [x64(backend, rng.standard_normal(shape))])
    torch = pytest.importorskip("torch")
    _same_as_torch(nn.Upsample(**kw), torch.nn.Upsample(**kw), backend, [rng.standard_normal(shape)])


def test_upsample_errors():
    x = bg.zeros(1, 2, 3, 3)
    with pytest.raises(NotImplementedError, match="mode='bilinear' is not supported"):
        F.interpolate(x, scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="exactly one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match=r"size \(2, 2, 2\) must be a number or have one entry per spatial axis"):
        F.interpolate(x, size=(2, 2, 2))
    with pytest.raises(ValueError, match=r"3-, 4- or 5-d input \(N, C, \*spatial\), got shape \(3, 3\)"):
        nn.Upsample(scale_factor=2)(bg.zeros(3, 3))
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, scale_factor=2, align_corners=True)


# --- the cupy backend's code paths, through the recording stand-in (simulated, not a GPU) ------------

class _AllNew(nn.Module):
    """One model through every layer above."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 12, 3, padding="same")
        self.gn = nn.GroupNorm(3, 12)
        self.inorm = nn.InstanceNorm1d(12, affine=True, track_running_stats=True)
        self.pool = nn.AdaptiveAvgPool1d(3)
        self.up = nn.Upsample(scale_factor=2)
        self.scales = nn.ParameterList([nn.Parameter(bg.ones(12, 1))])
        self.head = nn.Linear(12 * 3 + 5 * 3, 10)

    def forward(self, x):
        h = self.inorm(F.relu(self.gn(self.conv(x))) * self.scales[0])
        grid = F.adaptive_max_pool2d(self.up(h.unsqueeze(1)), (5, 3)).flatten(1)  # uneven windows
        return self.head(bg.cat([self.pool(h).flatten(1), grid], dim=1))


def _new_layers_step(model, opt, x, y, w, device):
    out = model(bg.tensor(x, device=device))
    loss = F.cross_entropy(out, bg.tensor(y, device=device), w) + 0.1 * F.kl_div(
        F.log_softmax(out, 1), F.softmax(out.detach() * 0.5, 1), reduction="batchmean")
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def test_new_layers_step_on_the_cupy_path_makes_no_sync(monkeypatch, tmp_path_factory):
    """After a warm-up step, a training step through every new layer makes no device-to-host sync
    and copies to the device only the batch (and the 0-d Python scalar constants that
    tests/test_gpu_structure.py still allows), and ends where the numpy backend's step ends."""
    rec, cupy = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    rng = np.random.default_rng(0)
    batches = [(rng.random((16, 8, 8)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(2)]
    runs = []
    for device in ("numpy", cupy):
        bg.manual_seed(0)
        model = _AllNew().to(device)
        w = bg.tensor(np.linspace(0.5, 1.5, 10).astype(np.float32), device=device)
        # SGD, not Adam: Adam steps a gradient that is rounding noise on both backends (gn.bias[5]'s is
        # 1e-7 of the largest; the host-built softmax and cross-entropy kernels differ from NumPy by
        # ulps) by up to lr either way, and the layers after it with it
        opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
        losses = [float(_new_layers_step(model, opt, *batches[0], w, device))]
        with rec.count() as c:
            loss = _new_layers_step(model, opt, *batches[1], w, device)
        runs.append((losses + [float(loss)], [t.numpy() for t in model.state_dict().values()], c))
    (ref_losses, ref_state, _), (losses, state, c) = runs
    assert c.syncs == 0, c.table(kinds=("sync",))
    copies = [(site, what) for (kind, site, what), n in c.events.items() if kind == "h2d"]
    batch = [s for s, _ in copies if s.endswith("(tensor)")]
    others = [(s, w) for s, w in copies if not s.endswith("(tensor)")
              and not ("(constant_like)" in s and w.startswith("asarray () "))]
    assert len(batch) == 2 and not others, c.table(kinds=("h2d",))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k, (a, b) in enumerate(zip(state, ref_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"state entry {k}")


@pytest.mark.parametrize("stride, padding, output_padding", [(1, 0, 0), (2, 1, 1), ((3, 2), (2, 0), (1, 1))])
def test_conv_transpose2d_matches_torch(backend, stride, padding, output_padding):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.ConvTranspose2d(3, 4, (3, 2), stride=stride, padding=padding, output_padding=output_padding,
                                      dtype=torch.float64)
    ours = nn.ConvTranspose2d(3, 4, (3, 2), stride=stride, padding=padding, output_padding=output_padding,
                              device=backend, dtype=bg.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    xo, xt = bg.tensor(x, device=backend, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    assert yo.shape == tuple(yt.shape)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(yo.shape)
    (yo * bg.tensor(g, device=backend)).sum().backward()
    (yt * torch.tensor(g)).sum().backward()
    for a, b in ((xo.grad, xt.grad), (ours.weight.grad, theirs.weight.grad), (ours.bias.grad, theirs.bias.grad)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    w = bg.tensor(ours.weight.numpy(), device=backend, requires_grad=True)
    assert bg.gradcheck(lambda a, b: F.conv_transpose2d(a, b, None, stride, padding, output_padding),
                        [bg.tensor(x[:1, :, :3, :3], device=backend, requires_grad=True), w])


def test_unflatten_and_channel_dropout(backend):
    x = bg.ones(4, 6, device=backend)
    assert nn.Unflatten(1, (2, 3))(x).shape == (4, 2, 3)
    bg.manual_seed(0)
    y = nn.Dropout2d(0.5)(bg.ones(64, 8, 3, 3, device=backend)).numpy()
    per_channel = y.reshape(64, 8, 9)
    assert ((per_channel == 0).all(-1) | (per_channel == 2).all(-1)).all()  # whole channels, kept ones x2
    assert 0.35 < (per_channel[..., 0] == 0).mean() < 0.65
    d = nn.Dropout1d(0.3)
    d.eval()
    z = bg.ones(2, 3, 5, device=backend)
    assert d(z) is z
    with pytest.raises(ValueError, match=r"dropout2d expects .* got shape \(4, 6\)"):
        F.dropout2d(x, 0.5)
