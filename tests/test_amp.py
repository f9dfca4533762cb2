"""Mixed precision: ``bg.autocast`` against float32 and against ``torch.autocast``, and
``bg.amp.GradScaler`` against ``torch.amp.GradScaler`` on the same overflow pattern.

Tolerances by dtype: a bfloat16 result carries 8 significant bits (relative rounding
2**-9), a float16 one 11 (2**-12); an autocast forward and backward round a handful of
times, so outputs and gradients are compared with float32 at rtol 4e-2 (bfloat16) and
5e-3 (float16), with atol of the same size relative to the largest value.
"""
import threading

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu.amp import lists
from backprop_gpu.array import get_backend
from backprop_gpu.tape.mode import state

F = bg.nn.functional
pytestmark = pytest.mark.skipif(bg.bfloat16 is None, reason="ml_dtypes (bfloat16) is not installed")

LOW = {"bfloat16": 4e-2, "float16": 5e-3}


def _device_type(backend):
    return "cpu" if backend.device.type == "cpu" else "cuda"


def _net(backend, seed=0):
    bg.manual_seed(seed)
    mlp = bg.nn.Sequential(bg.nn.Linear(6, 16), bg.nn.ReLU(), bg.nn.Linear(16, 4)).to(backend)
    conv = bg.nn.Conv1d(2, 3, 3).to(backend)
    return mlp, conv


def _loss(mlp, conv, x, xs, t):
    y = mlp(x)
    c = conv(xs)  # (N, 3, 6): flattened to a second head
    mix = np.random.default_rng(1).standard_normal((18, 4)).astype(np.float32) / 4
    z = y + bg.matmul(c.reshape(c.shape[0], 18), bg.tensor(mix, device=x.backend))
    return F.cross_entropy(z, t), y, c


def _grads(mlp, conv):
    return [p.grad.numpy().astype(np.float64) for p in list(mlp.parameters()) + list(conv.parameters())]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_outputs_and_gradients_match_float32(backend, dtype):
    rng = np.random.default_rng(0)
    x = bg.tensor(rng.standard_normal((8, 6)).astype(np.float32), device=backend)
    xs = bg.tensor(rng.standard_normal((8, 2, 8)).astype(np.float32), device=backend)
    t = bg.tensor(rng.integers(0, 4, 8), device=backend)
    results = {}
    for mode in ("float32", dtype):
        mlp, conv = _net(backend)
        with bg.autocast(_device_type(backend), dtype=getattr(bg, dtype), enabled=mode != "float32"):
            loss, y, c = _loss(mlp, conv, x, xs, t)
        loss.backward()
        results[mode] = (loss, y, c, _grads(mlp, conv))
    ref_loss, ref_y, ref_c, ref_g = results["float32"]
    loss, y, c, grads = results[dtype]
    assert (y.dtype.name, c.dtype.name, loss.dtype.name) == (dtype, dtype, "float32")
    tol = LOW[dtype]
    for got, want in ((loss, ref_loss), (y, ref_y), (c, ref_c)):
        want = want.numpy().astype(np.float64)
        np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=tol, atol=tol * np.abs(want).max())
    mlp, conv = _net(backend)
    for p, got, want in zip(list(mlp.parameters()) + list(conv.parameters()), grads, ref_g):
        assert p.dtype == np.float32  # float32 master weights, float32 gradients
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_gradients_come_back_in_each_inputs_dtype(backend):
    w32 = bg.randn(4, 3, device=backend, requires_grad=True)
    wbf = bg.randn(4, 3, device=backend).to(dtype=bg.bfloat16).requires_grad_()
    x = bg.randn(5, 3, device=backend)
    with bg.autocast(_device_type(backend), dtype=bg.bfloat16):
        y = F.linear(x, w32) + F.linear(x, wbf)
    assert y.dtype == bg.bfloat16
    y.float().sum().backward()
    assert w32.grad.dtype == np.float32 and wbf.grad.dtype == bg.bfloat16
    # d(sum(x @ w.T))/dw = column sums of x, broadcast over w's rows
    want = np.broadcast_to(x.numpy().sum(0), (4, 3))
    np.testing.assert_allclose(w32.grad.numpy(), want, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(wbf.grad.numpy().astype(np.float32), want, rtol=4e-2, atol=4e-2)


# -- result dtypes against torch.autocast('cpu', dtype=torch.bfloat16) -------------------------

def _cases(mod, fn):
    """(name, f(tensor maker)) with ``mod`` bg or torch and ``fn`` its functional module."""
    return [
        ("matmul", lambda a, b, h, t: mod.matmul(a, b)),
        ("mm", lambda a, b, h, t: mod.mm(a, b)),
        ("bmm", lambda a, b, h, t: mod.bmm(a.reshape(1, 4, 4), b.reshape(1, 4, 4))),
        ("einsum", lambda a, b, h, t: mod.einsum("ij,jk->ik", a, b)),
        ("linear", lambda a, b, h, t: fn.linear(a, b, b[0])),
        ("conv1d", lambda a, b, h, t: fn.conv1d(a.reshape(1, 2, 8), b.reshape(2, 2, 4))),
        ("conv2d", lambda a, b, h, t: fn.conv2d(a.reshape(1, 1, 4, 4), b.reshape(1, 1, 4, 4)[..., :2, :2])),
        ("matmul float64", lambda a, b, h, t: mod.matmul(a.double(), b.double())),
        ("cross_entropy", lambda a, b, h, t: fn.cross_entropy(h, t)),
        ("nll_loss", lambda a, b, h, t: fn.nll_loss(fn.log_softmax(h, 1), t)),
        ("mse_loss", lambda a, b, h, t: fn.mse_loss(h, h * 0.5)),
        ("l1_loss", lambda a, b, h, t: fn.l1_loss(h, h * 0.5)),
        ("smooth_l1_loss", lambda a, b, h, t: fn.smooth_l1_loss(h, h * 0.5)),
        ("huber_loss", lambda a, b, h, t: fn.huber_loss(h, h * 0.5)),
        ("kl_div", lambda a, b, h, t: fn.kl_div(fn.log_softmax(h, 1), fn.softmax(h, 1), reduction="batchmean")),
        ("binary_cross_entropy_with_logits", lambda a, b, h, t: fn.binary_cross_entropy_with_logits(h, h.sigmoid())),
        ("prod", lambda a, b, h, t: h.prod()),
        ("softmax", lambda a, b, h, t: fn.softmax(h, 1)),
        ("log_softmax", lambda a, b, h, t: fn.log_softmax(h, 1)),
        ("layer_norm", lambda a, b, h, t: fn.layer_norm(h, (4,))),
        ("sum", lambda a, b, h, t: h.sum()),
        ("mean", lambda a, b, h, t: h.mean()),
        ("exp", lambda a, b, h, t: h.exp()),
        ("log", lambda a, b, h, t: h.abs().log()),
        ("pow", lambda a, b, h, t: h ** 2),
        ("relu", lambda a, b, h, t: fn.relu(h)),
        ("tanh", lambda a, b, h, t: h.tanh()),
        ("float32 add", lambda a, b, h, t: a + b),
        ("promote bfloat16 + float32", lambda a, b, h, t: h + a),
    ]


def test_result_dtypes_match_torch_cpu_autocast():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((2, 4, 4)).astype(np.float32)
    t_np = rng.integers(0, 4, 4)
    ours, theirs = {}, {}
    a, b = bg.tensor(a_np), bg.tensor(b_np)
    h, t = a.to(dtype=bg.bfloat16), bg.tensor(t_np)
    with bg.autocast("cpu"):
        for name, f in _cases(bg, F):
            ours[name] = f(a, b, h, t).dtype.name
    ta, tb = torch.tensor(a_np), torch.tensor(b_np)
    th, tt = ta.bfloat16(), torch.tensor(t_np)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, f in _cases(torch, torch.nn.functional):
            theirs[name] = str(f(ta, tb, th, tt).dtype).replace("torch.", "")
    assert ours == theirs
    # and the lists say so: every case above either is in a list or runs in its inputs' type
    assert {"matmul", "linear", "conv2d", "einsum"} <= lists.LOWER["cpu"]
    assert {"cross_entropy", "mse_loss", "prod"} <= lists.FP32["cpu"]


def test_cuda_list_casts_softmax_and_reductions_up(backend):
    if _device_type(backend) != "cuda":
        pytest.skip("the CUDA list applies to tensors on a CUDA device")
    h = bg.randn(3, 4, device=backend).to(dtype=bg.float16)
    with bg.autocast("cuda"):
        assert F.softmax(h, 1).dtype == np.float32
        assert h.sum().dtype == np.float32 and h.exp().dtype == np.float32
        assert F.layer_norm(h, (4,)).dtype == np.float32
        assert bg.matmul(h.float(), h.float().T).dtype == np.float16


# -- the mode itself ----------------------------------------------------------------------------

def test_autocast_mode_nests_decorates_and_is_per_thread():
    assert state.plain and state.cast is None
    x = bg.randn(3, 3)

    @bg.autocast("cpu")
    def product():
        return bg.matmul(x, x)

    def gen():
        yield bg.matmul(x, x)

    assert product().dtype == bg.bfloat16
    assert next(bg.autocast("cpu", dtype=bg.float16)(gen)()).dtype == np.float16
    with bg.autocast("cpu"):
        assert bg.amp.is_autocast_enabled("cpu") and not bg.amp.is_autocast_enabled("cuda")
        with bg.autocast("cpu", enabled=False):
            assert bg.matmul(x, x).dtype == np.float32
        with bg.autocast("cuda"):  # another device type's region keeps the CPU one on
            assert bg.matmul(x, x).dtype == bg.bfloat16
        seen = []
        th = threading.Thread(target=lambda: seen.append(bg.matmul(x, x).dtype))
        th.start()
        th.join()
        assert seen == [np.float32]
        assert bg.matmul(x, x).dtype == bg.bfloat16
    assert state.plain and state.cast is None and bg.matmul(x, x).dtype == np.float32
    with pytest.raises(RuntimeError, match="unsupported autocast device_type 'tpu'"):
        bg.autocast("tpu")
    with pytest.warns(UserWarning, match="not supported. Disabling autocast"):
        off = bg.autocast("cpu", dtype=bg.float64)
    with off:
        assert state.cast is None


def test_cache_reuses_a_weights_cast_until_it_changes():
    w = bg.randn(3, 3, requires_grad=True)
    x = bg.randn(2, 3)
    with bg.autocast("cpu"):
        y1, y2 = F.linear(x, w), F.linear(x, w)
        assert y1._node.inputs[1] is y2._node.inputs[1]  # one cast of w, recorded once
        with bg.no_grad():
            w.add_(1.0)
        y3 = F.linear(x, w)
        assert y3._node.inputs[1] is not y1._node.inputs[1]
        y3.sum().backward()  # frees the cached cast's node: the next use casts again
        F.linear(x, w).float().sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), 2 * np.broadcast_to(x.numpy().sum(0), (3, 3)), rtol=2e-2)
    with bg.autocast("cpu", cache_enabled=False):
        assert F.linear(x, w)._node.inputs[1] is not F.linear(x, w)._node.inputs[1]


# -- GradScaler against torch -----------------------------------------------------------------

OVERFLOW_STEPS = {1, 4, 5, 9}  # an inf (or NaN) is put into a gradient on these steps


def _scaler_run(lib, opt_name, steps=12, unscale_first=False, backend="numpy", capturable=False):
    """Parameters after each step and the scale after each update, for bg (on ``backend``) or torch."""
    rng = np.random.default_rng(3)
    w0, x0 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    if lib == "torch":
        import torch
        w = torch.tensor(w0, requires_grad=True)
        x = torch.tensor(x0)
        opt_mod, scaler = torch.optim, torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=3)
    else:
        w = bg.tensor(w0, requires_grad=True, device=backend)
        x = bg.tensor(x0, device=backend)
        scaler = bg.amp.GradScaler(_device_type(get_backend(backend)), init_scale=2.0 ** 8, growth_interval=3)
        opt_mod = bg.optim
    kw = {"capturable": True} if capturable else {}
    opt = opt_mod.SGD([w], lr=0.1, momentum=0.9, **kw) if opt_name == "sgd" else opt_mod.Adam([w], lr=0.05, **kw)
    params, scales = [], []
    for i in range(steps):
        opt.zero_grad()
        loss = ((x @ w.T) ** 2).mean()
        scaler.scale(loss).backward()
        if i in OVERFLOW_STEPS:
            w.grad[1, 2] = float("inf") if i % 2 else float("nan")
        if unscale_first:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        params.append(np.array(w.detach().numpy()))
        scales.append(scaler.get_scale())
    return params, scales, scaler


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("unscale_first", [False, True])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_grad_scaler_matches_torch(backend, opt_name, unscale_first, capturable):
    """The fused path (skip on the device) and unscale_'s, against torch's host-side skip."""
    pytest.importorskip("torch")
    ours, our_scales, _ = _scaler_run("bg", opt_name, unscale_first=unscale_first, backend=backend,
                                      capturable=capturable)
    theirs, their_scales, _ = _scaler_run("torch", opt_name, unscale_first=unscale_first)
    assert our_scales == their_scales  # skip/backoff on the overflow steps, growth after 3 clean ones
    assert our_scales[:3] == [2.0 ** 8, 2.0 ** 7, 2.0 ** 7]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[1], ours[0])  # the overflow step changed nothing


def test_grad_scaler_stages_and_state_dict():
    torch = pytest.importorskip("torch")
    _, scales, scaler = _scaler_run("bg", "sgd", steps=7)
    sd = scaler.state_dict()
    assert sd == {"scale": scales[-1], "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3,
                  "_growth_tracker": 1}
    _, _, tscaler = _scaler_run("torch", "sgd", steps=7)
    assert tscaler.state_dict() == sd
    fresh = bg.amp.GradScaler("cpu")
    fresh.load_state_dict(tscaler.state_dict())
    assert fresh.state_dict() == sd and fresh.get_scale() == scales[-1]
    with pytest.raises(RuntimeError, match="state dict is empty"):
        fresh.load_state_dict({})
    w = bg.randn(2, requires_grad=True)
    w0 = w.detach().numpy().copy()
    opt = bg.optim.SGD([w], lr=0.1)
    scaler.scale((w * w).sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called on this optimizer"):
        scaler.unscale_(opt)
    np.testing.assert_allclose(w.grad.numpy(), 2 * w0, rtol=1e-6)
    scaler.step(opt)  # does not unscale a second time
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.1 * 2 * w0, rtol=1e-6)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    scaler.update(4.0)
    assert scaler.get_scale() == 4.0
    h = bg.randn(2).to(dtype=bg.float16).requires_grad_()
    h_opt = bg.optim.SGD([h], lr=0.1)
    scaler.scale(h.float().sum()).backward()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):  # torch's refusal too
        scaler.unscale_(h_opt)
    off = bg.amp.GradScaler("cpu", enabled=False)
    loss = (w * w).sum()
    assert off.scale(loss) is loss and off.get_scale() == 1.0 and off.state_dict() == {}
    assert isinstance(scaler._scale, np.ndarray) and scaler._scale.shape == ()  # lives on the device
    assert torch.amp.GradScaler("cpu").state_dict()["scale"] == bg.amp.GradScaler("cpu").state_dict()["scale"]


def test_grad_scaler_skip_is_taken_by_every_buffer_on_every_backend(backend):
    """The found-inf checks run over every flat buffer before any update: an overflow in the last
    buffer (a float64 group) leaves the first (float32) untouched, and the step counts stay."""
    a = bg.randn(4, device=backend, requires_grad=True)
    b = bg.randn(3, device=backend, dtype=bg.float64, requires_grad=True)
    opt = bg.optim.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    scaler = bg.amp.GradScaler(_device_type(backend), init_scale=8.0)
    for overflow in (False, True, False):
        opt.zero_grad()
        scaler.scale((a * a).sum() + (b * b).sum()).backward()
        if overflow:
            b.grad[0] = float("nan")
        before = [a.numpy().copy(), b.numpy().copy()]
        scaler.step(opt)
        scaler.update()
        changed = [not np.array_equal(x.numpy(), y) for x, y in zip((a, b), before)]
        assert changed == [not overflow] * 2
    assert [int(st["step"]) for st in opt.state_dict()["state"].values()] == [2, 2]
    assert scaler.get_scale() == 4.0


def test_grad_scaler_keeps_scale_and_found_inf_on_the_device(backend):
    w = bg.randn(3, device=backend, requires_grad=True)
    opt = bg.optim.SGD([w], lr=0.1)
    scaler = bg.amp.GradScaler(_device_type(backend), init_scale=8.0)
    scaler.scale((w * w).sum()).backward()
    scaler.unscale_(opt)
    found = scaler._per_optimizer_states[id(opt)]["found_inf_per_device"]
    arrays = [scaler._scale, scaler._growth_tracker, *found.values()]
    assert all(type(a) is type(w.array) and a.shape == () for a in arrays)
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.detach().numpy(), rtol=1e-6)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 8.0 and scaler._get_growth_tracker() == 1


# -- training on digits -------------------------------------------------------------------------

def _digits_accuracy(autocast_dtype, scaled=False):
    from backprop_gpu.app.data import datasets

    train, test = datasets.digits()
    bg.manual_seed(0)
    model = bg.nn.Sequential(bg.nn.Linear(64, 64), bg.nn.ReLU(), bg.nn.Linear(64, 10))
    opt = bg.optim.Adam(model.parameters(), lr=3e-3)
    scaler = bg.amp.GradScaler("cpu", enabled=scaled)
    on = autocast_dtype is not None
    rng = np.random.default_rng(0)
    x_all, y_all = bg.tensor(train.x), bg.tensor(train.y)
    for _ in range(8):
        order = rng.permutation(len(train))
        for lo in range(0, len(order), 64):
            idx = bg.tensor(order[lo:lo + 64])
            with bg.autocast("cpu", dtype=autocast_dtype, enabled=on):
                logits = model(x_all[idx])
                loss = F.cross_entropy(logits, y_all[idx])
            assert logits.dtype == (autocast_dtype if on else np.float32)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    with bg.no_grad(), bg.autocast("cpu", dtype=autocast_dtype, enabled=on):
        pred = model(bg.tensor(test.x)).float().argmax(1).numpy()
    return float((pred == test.y).mean())


def test_low_precision_training_on_digits_reaches_float32_accuracy():
    full = _digits_accuracy(None)
    assert full > 0.9
    for dtype, scaled in ((bg.bfloat16, False), (bg.float16, True)):
        low = _digits_accuracy(dtype, scaled)
        assert low >= full - 0.02, (dtype, low, full)


def _digits_accuracy_of_a_model_in(dtype):
    """A digits MLP whose parameters are ``dtype`` (``Module.half()`` / ``bfloat16()``), trained by Adam on
    float32 master weights and state, the loss in float32."""
    from backprop_gpu.app.data import datasets

    train, test = datasets.digits()
    bg.manual_seed(0)
    model = bg.nn.Sequential(bg.nn.Linear(64, 64), bg.nn.ReLU(), bg.nn.Linear(64, 10))
    model = {"float32": model.float, "float16": model.half, "bfloat16": model.bfloat16}[dtype]()
    assert all(p.dtype.name == dtype for p in model.parameters())
    opt = bg.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    x_all, y_all = bg.tensor(train.x).to(model[0].weight.dtype), bg.tensor(train.y)
    for _ in range(8):
        order = rng.permutation(len(train))
        for lo in range(0, len(order), 64):
            idx = bg.tensor(order[lo:lo + 64])
            loss = F.cross_entropy(model(x_all[idx]).float(), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with bg.no_grad():
        pred = model(bg.tensor(test.x).to(model[0].weight.dtype)).float().argmax(1).numpy()
    return float((pred == test.y).mean())


def test_16_bit_models_train_to_float32_accuracy_on_master_weights():
    full = _digits_accuracy_of_a_model_in("float32")
    assert full > 0.9
    for dtype in ("float16", "bfloat16"):
        low = _digits_accuracy_of_a_model_in(dtype)
        assert low >= full - 0.02, (dtype, low, full)


# -- the GPU rules, through the recording stand-in for CuPy ---------------------------------

def _optimizer_launches(c):
    """``{kernel: n}`` of the fused optimizer kernels (update and found-inf check) in counts ``c``."""
    return {what.split()[-1]: n for (k, site, what), n in c.events.items()
            if k == "launch" and "RawKernel" in what and "array/optim/" in site}


@pytest.mark.parametrize("capturable", [False, True])
def test_scaled_autocast_step_makes_no_sync_and_skips_on_the_device(monkeypatch, tmp_path_factory, capturable):
    """On the CuPy stand-in (tests/recording_cupy.py), after a warm-up step: an autocast forward,
    ``scale``, backward, ``step`` and ``update`` read nothing back to the host, copy nothing to it
    and (``step``) allocate nothing. Two param groups are two flat buffers: ``step`` is one check
    launch per buffer, then one update launch per buffer (which unscales and reads the flag), then
    the step counts' increments. An inf in the second buffer's gradient skips both buffers."""
    import recording_cupy

    rec, cupy = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    bg.manual_seed(0)
    model = bg.nn.Sequential(bg.nn.Linear(6, 8), bg.nn.ReLU(), bg.nn.Linear(8, 3)).to(cupy)
    opt = bg.optim.Adam([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 3e-3}],
                        lr=1e-2, capturable=capturable)
    scaler = bg.amp.GradScaler("cuda", init_scale=2.0 ** 4, growth_interval=1)
    x = bg.randn(5, 6, device=cupy)
    t = bg.tensor(np.array([0, 1, 2, 1, 0]), device=cupy)

    def train_step(overflow=False):
        opt.zero_grad()
        with bg.autocast("cuda"):
            out = model(x)
            loss = F.cross_entropy(out, t)
        scaler.scale(loss).backward()
        if overflow:
            model[2].bias.grad[1] = float("inf")  # on the device: a launch, no copy
        with rec.count() as c_step:
            scaler.step(opt)
        scaler.update()
        return out, loss, c_step

    train_step()  # warm-up: device step counts, lr, flags and the kernels are made
    w0 = [recording_cupy.to_host(p.array).copy() for p in model.parameters()]
    with rec.count() as c:
        out, loss, c_step = train_step()
    assert out.dtype == np.float16 and loss.dtype == np.float32
    assert c.syncs == 0, c.table(kinds=("sync",))
    assert c_step.syncs == 0 and c_step.h2d == 0 and c_step.allocs == 0, c_step.table(kinds=("sync", "h2d", "alloc"))
    assert _optimizer_launches(c_step) == {"bpg_nonfinite_f32": 2, "bpg_adam_000_f32_d": 2}
    # besides those: 1/scale, the flag's reset, 1 - found_inf, and each buffer's step count increment
    assert c_step.launches == 4 + 3 + 2, c_step.table(kinds=("launch",))
    assert scaler.get_scale() == 2.0 ** 6  # two clean steps, growth_interval 1: grown on the device
    w1 = [recording_cupy.to_host(p.array).copy() for p in model.parameters()]
    assert all(not np.array_equal(a, b) for a, b in zip(w0, w1))
    with rec.count() as c:
        train_step(overflow=True)
    assert c.syncs == 0, c.table(kinds=("sync",))
    for p, w in zip(model.parameters(), w1):  # both buffers skipped, though only the second overflowed
        np.testing.assert_array_equal(recording_cupy.to_host(p.array), w)
    assert scaler.get_scale() == 2.0 ** 5  # backed off
    steps = [int(st["step"]) for st in opt.state_dict()["state"].values()]
    assert steps == [2, 2, 2, 2]  # the skipped step was not counted (Adam's bias corrections stay torch's)
