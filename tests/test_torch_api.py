"""PyTorch's surface added for ported scripts: bg.cuda, bg.utils.data's datasets, the loss modules,
LogSoftmax, ModuleDict, bg.nn.utils and bg.save/bg.load, each checked against torch where installed."""
import io
import math
from collections import OrderedDict

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import nn
from backprop_gpu.array import BACKENDS
from backprop_gpu.utils.data import Subset, TensorDataset, default_collate, random_split

rng = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch")


# --- bg.cuda ------------------------------------------------------------------------------

def test_cuda_queries_follow_the_registry():
    gpu = BACKENDS["cupy"].availability() is None
    assert bg.cuda.is_available() is gpu
    if gpu:
        assert bg.cuda.device_count() >= 1 and 0 <= bg.cuda.current_device() < bg.cuda.device_count()
    else:
        assert bg.cuda.device_count() == 0
        with pytest.raises(bg.BackendUnavailableError, match="no CUDA GPU is available"):
            bg.cuda.current_device()
    # where there is no GPU these are no-ops, as torch's manual_seed is (torch's synchronize raises)
    assert bg.cuda.synchronize() is None and bg.cuda.synchronize("cuda:0") is None and bg.cuda.synchronize(0) is None
    assert bg.cuda.manual_seed(3) is None and bg.cuda.manual_seed_all(3) is None


def test_cuda_agrees_with_torch_on_this_machine():
    torch = _torch()
    if torch.cuda.is_available() != bg.cuda.is_available():
        pytest.skip("torch and CuPy see different CUDA set-ups here")
    assert bg.cuda.device_count() == torch.cuda.device_count()


def test_cuda_arguments_are_checked():
    with pytest.raises(ValueError, match="Expected a cuda device, but got: cpu"):
        bg.cuda.synchronize("cpu")
    with pytest.raises(TypeError, match="device must be None, an int"):
        bg.cuda.synchronize(1.5)
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        bg.cuda.manual_seed("1")
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        bg.cuda.manual_seed_all(1.0)


@pytest.mark.gpu
def test_cuda_manual_seed_reseeds_the_gpu_stream():
    bg.cuda.manual_seed(7)
    a = bg.randn(5, device="cuda").numpy()
    bg.cuda.manual_seed_all(7)
    b = bg.randn(5, device="cuda").numpy()
    np.testing.assert_array_equal(a, b)
    bg.cuda.synchronize()


# --- loss modules ------------------------------------------------------------------------------

def _pair(backend, torch, arr, grad=True):
    return (bg.tensor(arr, device=backend, requires_grad=grad), torch.tensor(arr, requires_grad=grad))


def _check_loss(backend, ours, theirs, x, t, tt=None):
    torch = _torch()
    a, b = _pair(backend, torch, x)
    ta = bg.tensor(t, device=backend)
    tb = torch.tensor(t) if tt is None else tt
    la, lb = ours(a, ta), theirs(b, tb)
    np.testing.assert_allclose(la.numpy(), lb.detach().numpy(), rtol=1e-10, atol=1e-12)
    la.sum().backward()
    lb.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_losses_match_torch(backend, reduction):
    torch = _torch()
    x = rng.standard_normal((6, 4))
    t = np.array([0, 3, 1, -100, 2, 3])
    _check_loss(backend, nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1),
                torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1), x, t)
    _check_loss(backend, nn.CrossEntropyLoss(ignore_index=1, reduction=reduction),
                torch.nn.CrossEntropyLoss(ignore_index=1, reduction=reduction), x, np.array([0, 3, 1, 1, 2, 3]))
    logp = torch.log_softmax(torch.tensor(x), 1).numpy()
    _check_loss(backend, nn.NLLLoss(reduction=reduction), torch.nn.NLLLoss(reduction=reduction), logp, t)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_losses_match_torch(backend, reduction):
    torch = _torch()
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    for ours, theirs in ((nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction)),
                         (nn.L1Loss(reduction=reduction), torch.nn.L1Loss(reduction=reduction)),
                         (nn.SmoothL1Loss(reduction=reduction, beta=0.5),
                          torch.nn.SmoothL1Loss(reduction=reduction, beta=0.5)),
                         (nn.HuberLoss(reduction=reduction, delta=0.7), torch.nn.HuberLoss(reduction=reduction,
                                                                                            delta=0.7))):
        _check_loss(backend, ours, theirs, x, t)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_losses_match_torch(backend, reduction):
    torch = _torch()
    x = rng.standard_normal((4, 3))
    t = rng.random((4, 3))
    w, pw = rng.random(3) + 0.5, rng.random(3) + 0.5
    bw, bpw = bg.tensor(w, device=backend), bg.tensor(pw, device=backend)
    _check_loss(backend, nn.BCEWithLogitsLoss(reduction=reduction),
                torch.nn.BCEWithLogitsLoss(reduction=reduction), x, t)
    _check_loss(backend, nn.BCEWithLogitsLoss(weight=bw, pos_weight=bpw, reduction=reduction),
                torch.nn.BCEWithLogitsLoss(weight=torch.tensor(w), pos_weight=torch.tensor(pw),
                                           reduction=reduction), x, t)
    p = 1 / (1 + np.exp(-x))
    _check_loss(backend, nn.BCELoss(reduction=reduction), torch.nn.BCELoss(reduction=reduction), p, t)
    _check_loss(backend, nn.BCELoss(weight=bw, reduction=reduction),
                torch.nn.BCELoss(weight=torch.tensor(w), reduction=reduction), p, t)


def test_bce_clamps_the_log_at_minus_100_as_torch():
    torch = _torch()
    p, t = np.array([0.0, 1.0, 0.5, 1.0]), np.array([1.0, 0.0, 1.0, 1.0])
    x = bg.tensor(p, requires_grad=True)
    loss = nn.BCELoss(reduction="none")(x, bg.tensor(t))
    theirs = torch.nn.BCELoss(reduction="none")(torch.tensor(p), torch.tensor(t)).numpy()
    np.testing.assert_allclose(loss.numpy(), theirs, rtol=1e-12)
    assert loss.numpy()[0] == theirs[0] == 100.0
    loss.sum().backward()
    assert np.isfinite(x.grad.numpy()).all() and x.grad.numpy()[2] == -2.0  # d/dx -log x at 0.5


def test_loss_module_arguments_without_a_functional_form_are_refused():
    with pytest.raises(NotImplementedError, match="size_average=False"):
        nn.MSELoss(size_average=False)
    with pytest.raises(NotImplementedError, match="reduce=True"):
        nn.L1Loss(reduce=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(TypeError, match="pos_weight must be a Tensor"):
        nn.BCEWithLogitsLoss(pos_weight=[1.0, 2.0])


def test_loss_weights_are_buffers_as_in_torch():
    torch = _torch()
    ours = nn.BCEWithLogitsLoss(weight=bg.ones(2), pos_weight=bg.ones(2) * 3)
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.ones(2), pos_weight=torch.ones(2) * 3)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "pos_weight"]
    assert list(nn.CrossEntropyLoss().state_dict()) == list(torch.nn.CrossEntropyLoss().state_dict()) == []


def test_log_softmax_module_matches_torch(backend):
    torch = _torch()
    x = rng.standard_normal((3, 5))
    for dim in (0, 1, -1):
        a, b = _pair(backend, torch, x)
        ya, yb = nn.LogSoftmax(dim=dim)(a), torch.nn.LogSoftmax(dim=dim)(b)
        np.testing.assert_allclose(ya.numpy(), yb.detach().numpy(), rtol=1e-12)
        (ya * bg.tensor(x, device=backend)).sum().backward()
        (yb * torch.tensor(x)).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        implicit = nn.LogSoftmax()(bg.tensor(x)).numpy()
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        np.testing.assert_allclose(implicit, torch.nn.LogSoftmax()(torch.tensor(x)).numpy(), rtol=1e-12)
    assert repr(nn.LogSoftmax(dim=1)) == repr(torch.nn.LogSoftmax(dim=1)) == "LogSoftmax(dim=1)"


# --- ModuleDict -------------------------------------------------------------------------------

def test_module_dict_registers_like_torch():
    torch = _torch()
    ours = nn.ModuleDict({"enc": nn.Linear(3, 4), "act": nn.ReLU()})
    theirs = torch.nn.ModuleDict({"enc": torch.nn.Linear(3, 4), "act": torch.nn.ReLU()})
    ours["dec"] = nn.Linear(4, 2)
    theirs["dec"] = torch.nn.Linear(4, 2)
    ours.update([("head", nn.Linear(2, 1))])
    theirs.update([("head", torch.nn.Linear(2, 1))])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours) == list(theirs) == list(ours.keys()) and len(ours) == len(theirs) == 4
    assert "enc" in ours and isinstance(ours["enc"], nn.Linear) and ours.enc is ours["enc"]
    assert isinstance(ours.pop("act"), nn.ReLU) and "act" not in ours and not hasattr(ours, "act")
    del ours["head"]
    assert list(ours) == ["enc", "dec"] and len(list(ours.parameters())) == 4
    assert [k for k, _ in ours.items()] == ["enc", "dec"] and all(isinstance(m, nn.Linear) for m in ours.values())
    ours.clear()
    assert len(ours) == 0 and list(ours.parameters()) == []


def test_module_dict_refuses_non_modules_before_changing_anything():
    d = nn.ModuleDict({"a": nn.ReLU()})
    with pytest.raises(TypeError, match="ModuleDict takes Modules, got int for key 'b'"):
        d.update({"c": nn.Tanh(), "b": 3})
    assert list(d) == ["a"]
    with pytest.raises(TypeError, match="keys must be strings"):
        d[1] = nn.ReLU()
    with pytest.raises(TypeError, match=r"element #0 should be a \(name, module\) pair"):
        d.update([nn.ReLU()])


# --- bg.nn.utils ----------------------------------------------------------------------------

def _twin_models(backend, torch, with_optimizer):
    w1, b1, w2 = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 4))
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False)).to(backend).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2, bias=False)).double()
    with bg.no_grad(), torch.no_grad():
        for p, q, v in zip(ours.parameters(), theirs.parameters(), (w1, b1, w2)):
            p.copy_(v)
            q.copy_(torch.tensor(v))
    if with_optimizer:  # gradients become views of one flat buffer
        bg.optim.SGD(ours.parameters(), lr=0.1)
    x = rng.standard_normal((5, 3)) * 3
    (ours(bg.tensor(x, device=backend)) ** 2).sum().backward()
    (theirs(torch.tensor(x)) ** 2).sum().backward()
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_clip_grad_norm_matches_torch(backend, norm_type, with_optimizer):
    torch = _torch()
    ours, theirs = _twin_models(backend, torch, with_optimizer)
    ta = nn.utils.clip_grad_norm_(ours.parameters(), max_norm=0.5, norm_type=norm_type)
    tb = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm=0.5, norm_type=norm_type)
    np.testing.assert_allclose(float(ta.item()), float(tb), rtol=1e-10)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_clip_grad_value_matches_torch(backend, with_optimizer):
    torch = _torch()
    ours, theirs = _twin_models(backend, torch, with_optimizer)
    assert nn.utils.clip_grad_value_(ours.parameters(), clip_value=0.3) is None
    assert torch.nn.utils.clip_grad_value_(theirs.parameters(), clip_value=0.3) is None
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-15)
        assert np.abs(p.grad.numpy()).max() <= 0.3
    with pytest.raises(TypeError, match="clip_value must be a number"):
        nn.utils.clip_grad_value_(ours.parameters(), clip_value="1")


def test_clipping_keeps_its_old_import_path():
    from backprop_gpu.optim.clip import clip_grad_norm_, clip_grad_value_

    assert bg.optim.clip_grad_norm_ is clip_grad_norm_ is nn.utils.clip_grad_norm_
    assert clip_grad_value_ is nn.utils.clip_grad_value_


def test_parameters_to_vector_and_back_match_torch(backend):
    torch = _torch()
    ours, theirs = _twin_models(backend, torch, with_optimizer=True)
    va = nn.utils.parameters_to_vector(ours.parameters())
    vb = torch.nn.utils.parameters_to_vector(theirs.parameters())
    np.testing.assert_array_equal(va.numpy(), vb.detach().numpy())
    assert va.shape == (24,) and va.requires_grad  # differentiable, as torch's cat of views
    new = rng.standard_normal(24)
    assert nn.utils.vector_to_parameters(bg.tensor(new, device=backend), ours.parameters()) is None
    torch.nn.utils.vector_to_parameters(torch.tensor(new), theirs.parameters())
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.detach().numpy())
    with pytest.raises(ValueError, match=r"vec has shape \(23,\) but the parameters hold 24 elements"):
        nn.utils.vector_to_parameters(bg.tensor(new[:23], device=backend), ours.parameters())
    with pytest.raises(TypeError, match="expected a Tensor, but got: ndarray"):
        nn.utils.vector_to_parameters(new, ours.parameters())


# --- bg.save / bg.load ----------------------------------------------------------------------

def _equal(a, b, where="obj"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, bg.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, where
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _trained(backend, steps):
    bg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(backend)
    opt = bg.optim.Adam(model.parameters(), lr=0.01)
    sched = bg.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x = bg.tensor(np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32), device=backend)
    y = bg.tensor(np.arange(16) % 3, device=backend)

    def train(n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    train(steps)
    return model, opt, sched, train


@pytest.mark.parametrize("to", ["path", "buffer"])
def test_save_load_round_trips_a_training_checkpoint(backend, tmp_path, to):
    model, opt, sched, train = _trained(backend, 3)
    ckpt = {"epoch": 3, "model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
            "loss": 0.25}
    f = tmp_path / "ckpt.pt" if to == "path" else io.BytesIO()
    bg.save(ckpt, f)
    if to == "buffer":
        f.seek(0)
    loaded = bg.load(f)
    _equal(ckpt, loaded)
    assert isinstance(loaded["model"], OrderedDict) and set(loaded["optim"]["state"]) == {0, 1, 2, 3, 4, 5}
    if to == "path":
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    # load into fresh objects and continue: identical to the run that never stopped
    train(3)
    fresh, fopt, fsched, ftrain = _trained(backend, 0)
    fresh.load_state_dict(loaded["model"])
    fopt.load_state_dict(loaded["optim"])
    fsched.load_state_dict(loaded["sched"])
    ftrain(3)
    for (k, p), q in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=k)


def test_save_load_keeps_structure_and_values():
    obj = {"a": [1, 2.5, None, True, "s", (3, "t")], 7: {"nested": np.arange(6, dtype=np.int16).reshape(2, 3)},
           "scalar": np.float32(1.5), "specials": [math.nan, math.inf, -math.inf], (1, 2): "tuple key",
           "t": bg.tensor(np.array([[1.0, 2.0]], np.float64), requires_grad=True),
           "i": bg.tensor(np.array([3, 4], np.int64)), "b": bg.tensor(np.array([True, False])),
           "empty": bg.tensor(np.zeros((0, 3), np.float32)), "zero_d": bg.tensor(np.float32(2.0))}
    buf = io.BytesIO()
    bg.save(obj, buf)
    back = bg.load(io.BytesIO(buf.getvalue()))
    _equal(obj, back)
    assert back["t"].requires_grad and not back["i"].requires_grad


def test_save_load_match_torch_for_the_same_structure():
    torch = _torch()
    obj = {"state": {0: {"step": 2, "m": np.ones(2)}}, "groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]}
    tbuf, buf = io.BytesIO(), io.BytesIO()
    torch.save(obj, tbuf)
    bg.save(obj, buf)
    tbuf.seek(0)
    buf.seek(0)
    _equal(torch.load(tbuf, weights_only=False), bg.load(buf, weights_only=False))


def test_save_refuses_arbitrary_objects_without_writing(tmp_path):
    class Thing:
        pass

    f = tmp_path / "x.pt"
    with pytest.raises(TypeError, match=r"test_torch_api\..*Thing at obj\['model'\]\[1\]: pickle is not used"):
        bg.save({"model": [1, Thing()]}, f)
    assert not f.exists() and list(tmp_path.iterdir()) == []
    bg.save({"ok": 1}, f)
    with pytest.raises(TypeError, match="cannot store an object of type builtins.function"):
        bg.save({"ok": 2, "f": lambda: 0}, f)
    assert bg.load(f) == {"ok": 1}  # the old file is intact
    with pytest.raises(TypeError, match="dict key"):
        bg.save({object(): 1}, io.BytesIO())
    with pytest.raises(TypeError, match="f must be a path or a writable"):
        bg.save({}, 3)


def test_load_refuses_corrupt_and_foreign_files(tmp_path):
    f = tmp_path / "x.pt"
    bg.save({"w": bg.ones(3)}, f)
    data = f.read_bytes()
    (tmp_path / "short.pt").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"short.pt is not a file written by bg.save, or it is corrupt"):
        bg.load(tmp_path / "short.pt")
    (tmp_path / "foreign.pt").write_bytes(b"PK\x03\x04" + bytes(64))  # a torch.save zip, say
    with pytest.raises(ValueError, match="foreign.pt is not a file written by bg.save"):
        bg.load(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bg.load(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="map_location must be a device string"):
        bg.load(f, map_location=lambda s, loc: s)
    with pytest.raises(ValueError, match="unknown device"):
        bg.load(f, map_location="tpu")


def test_state_dicts_interchange_with_torch_through_safetensors(tmp_path, backend):
    """A torch state_dict saved with safetensors loads into our model, and ours into torch's."""
    torch = _torch()
    from safetensors.torch import load_file, save_file

    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    save_file(theirs.state_dict(), str(tmp_path / "torch.safetensors"))
    sd = bg.load(tmp_path / "torch.safetensors", map_location=backend)
    assert set(sd) == set(theirs.state_dict()) and all(t.device == backend.device for t in sd.values())
    ours = bg.nn.Sequential(bg.nn.Linear(3, 4), bg.nn.BatchNorm1d(4), bg.nn.Linear(4, 2)).to(backend)
    ours.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(bg.tensor(x, device=backend)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    bg.save({"model": ours.state_dict(), "epoch": 2}, tmp_path / "ours.safetensors")
    back = load_file(str(tmp_path / "ours.safetensors"))
    assert set(back) == {f"model.{k}" for k in theirs.state_dict()}
    theirs.load_state_dict({k[len("model."):]: v for k, v in back.items()})
    np.testing.assert_allclose(theirs(torch.tensor(x)).detach().numpy(), ours(bg.tensor(x, device=backend)).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert bg.load(tmp_path / "ours.safetensors")["epoch"] == 2


def test_dlpack_shares_memory_with_torch_and_numpy():
    torch = _torch()
    t = torch.arange(6.0).reshape(2, 3)
    ours = bg.from_dlpack(t)
    t[0, 0] = 42.0  # no copy: the change shows through
    assert ours.shape == (2, 3) and ours.dtype == np.float32 and ours.numpy()[0, 0] == 42.0
    x = bg.ones(2, 2)
    theirs = torch.from_dlpack(x)
    x[0, 0] = 7.0
    assert theirs[0, 0].item() == 7.0
    assert np.from_dlpack(bg.utils.dlpack.from_dlpack(np.arange(3))).tolist() == [0, 1, 2]
    assert torch.utils.dlpack.from_dlpack(bg.utils.dlpack.to_dlpack(x)).shape == (2, 2)
    with pytest.raises(RuntimeError, match="require gradient, use tensor.detach"):
        torch.from_dlpack(bg.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="an object with __dlpack__"):
        bg.from_dlpack([1, 2])


@pytest.mark.gpu
def test_dlpack_of_a_cupy_array_lands_on_its_gpu():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("needs a real CUDA GPU (cupy.is_available() is False)")
    a = cupy.arange(4, dtype=cupy.float32)
    t = bg.from_dlpack(a)
    a[0] = 9
    assert t.device.type == "cuda" and t.numpy()[0] == 9.0


def test_load_map_location(backend):
    t = bg.tensor(np.arange(4.0), device=backend)
    buf = io.BytesIO()
    bg.save({"t": t}, buf)
    again = bg.load(io.BytesIO(buf.getvalue()))["t"]
    assert again.backend is t.backend
    on_cpu = bg.load(io.BytesIO(buf.getvalue()), map_location="cpu")["t"]
    assert on_cpu.device == "cpu"
    np.testing.assert_array_equal(on_cpu.numpy(), t.numpy())
    mapped = bg.load(io.BytesIO(buf.getvalue()), map_location={str(t.device): "numpy"})["t"]
    assert mapped.backend.name == "numpy"
    assert bg.load(io.BytesIO(buf.getvalue()), map_location=bg.device("cpu"))["t"].device == "cpu"


# --- bg.utils.data: datasets and collation ---------------------------------------------------------

def test_tensor_dataset_and_subset_match_torch():
    torch = _torch()
    x, y = rng.standard_normal((5, 2)), np.arange(5)
    ours, theirs = TensorDataset(bg.tensor(x), bg.tensor(y)), torch.utils.data.TensorDataset(torch.tensor(x),
                                                                                              torch.tensor(y))
    assert len(ours) == len(theirs) == 5
    for i in (0, 3, -1):
        for a, b in zip(ours[i], theirs[i]):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    sub, tsub = Subset(ours, [4, 0]), torch.utils.data.Subset(theirs, [4, 0])
    assert len(sub) == len(tsub) == 2
    np.testing.assert_array_equal(sub[0][1].numpy(), tsub[0][1].numpy())
    with pytest.raises(ValueError, match=r"Size mismatch between tensors: first dimensions \[5, 4\] differ"):
        TensorDataset(bg.tensor(x), bg.tensor(y[:4]))
    with pytest.raises(TypeError, match="TensorDataset takes Tensors, got ndarray at position 1"):
        TensorDataset(bg.tensor(x), y)


def test_default_collate_matches_torch():
    torch = _torch()
    from torch.utils.data import default_collate as torch_collate

    xs = [rng.standard_normal(3).astype(np.float32) for _ in range(2)]
    samples = [{"x": bg.tensor(xs[i]), "n": np.int16(i), "a": np.ones(2) * i, "i": i, "f": 0.5 * i, "b": i == 0,
                "s": f"s{i}", "pair": (i, 2.0)} for i in range(2)]
    tsamples = [{**s, "x": torch.tensor(xs[i])} for i, s in enumerate(samples)]
    ours, theirs = default_collate(samples), torch_collate(tsamples)
    assert ours.keys() == theirs.keys() and ours["s"] == theirs["s"] == ["s0", "s1"]
    assert isinstance(ours["pair"], list) and isinstance(theirs["pair"], list)
    for k in ("x", "n", "a", "i", "f", "b"):
        assert str(ours[k].dtype) == str(theirs[k].dtype).removeprefix("torch."), k
        np.testing.assert_array_equal(ours[k].numpy(), theirs[k].numpy(), err_msg=k)
    for a, b in zip(ours["pair"], theirs["pair"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found object"):
        default_collate([object()])


def test_random_split_follows_torch_lengths():
    torch = _torch()
    for lengths, n in (([0.33, 0.33, 0.34], 10), ([0.5, 0.5], 11), ([3, 7], 10), ([0.1, 0.2, 0.7], 7)):
        ours = random_split(range(n), lengths, generator=np.random.default_rng(0))
        theirs = torch.utils.data.random_split(range(n), lengths)
        assert [len(s) for s in ours] == [len(s) for s in theirs], lengths
        assert sorted(i for s in ours for i in s.indices) == list(range(n))
    a = random_split(range(20), [5, 15], generator=np.random.default_rng(4))
    b = random_split(range(20), [5, 15], generator=np.random.default_rng(4))
    assert a[0].indices == b[0].indices and [a[0][i] for i in range(5)] == a[0].indices
    with pytest.raises(ValueError, match=r"Sum of input lengths \(6: \[3, 3\]\) does not equal the length of the "
                                         r"input dataset \(10\)"):
        random_split(range(10), [3, 3])
    with pytest.raises(ValueError, match=r"non-negative ints or fractions summing to 1, got \[0.5, 0.6\]"):
        random_split(range(10), [0.5, 0.6])
