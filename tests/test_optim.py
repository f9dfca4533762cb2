"""Optimizer classes over tensors: flat buffers, one launch per step, state_dict, schedulers, errors."""
import math

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from backprop_gpu.optim import lr_scheduler

from test_optim_kernels import VARIANTS, group_for

OPT_CASES = [(name, i) for name, vs in VARIANTS.items() for i in range(len(vs))]


def make_params(backend, shapes, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [bg.tensor(rng.standard_normal(s).astype(dtype), device=backend, requires_grad=True) for s in shapes]


def build(name, variant, params, lr=0.01, capturable=False):
    g = group_for(name, variant, lr=lr)
    return optim.OPTIMIZERS[name](params, capturable=capturable, **g)


def train(backend, name, variant, steps, shapes=((3, 4), (4,), (2, 3, 2)), dtype="float32", capturable=False):
    params = make_params(backend, shapes, dtype=dtype)
    opt = build(name, variant, params, capturable=capturable)
    target = [bg.tensor(np.ones(p.shape, dtype), device=backend) for p in params]
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - t) ** 2).sum() for p, t in zip(params, target))
        loss.backward()
        opt.step()
    return [p.numpy() for p in params], opt


# capturable: lr and step counts on the device, the per-step scalars computed in the kernel
CAPTURABLE = pytest.mark.parametrize("capturable", [False, True], ids=["host-scalars", "capturable"])


def _simulator_subset(backend, variant, capturable):
    """The CUDA simulator (~0.5 s a test) runs the capturable form on each optimizer's first variant;
    every variant runs on numpy and numba, and as kernels in tests/test_fused_kernels.py."""
    if capturable and backend.simulated and variant:
        pytest.skip("capturable in the CUDA simulator: first variant per optimizer only (time)")


@CAPTURABLE
@pytest.mark.parametrize("name,variant", OPT_CASES)
def test_every_backend_trains_like_numpy(backend, name, variant, capturable):
    _simulator_subset(backend, variant, capturable)
    ref, _ = train("numpy", name, variant, 10)
    got, _ = train(backend, name, variant, 10, capturable=capturable)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_optimizers_reduce_a_quadratic(name):
    lr = {"sgd": 0.1, "adadelta": 1.0, "adagrad": 0.5}.get(name, 0.05)
    params = make_params("numpy", [(5,)])
    opt = optim.OPTIMIZERS[name](params, lr=lr)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((params[0] - 3.0) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Adadelta's first steps are ~lr * sqrt(eps) by design: it only has to be heading down
    assert losses[-1] < (0.95 if name == "adadelta" else 0.5) * losses[0]
    assert all(b <= a for a, b in zip(losses[:10], losses[1:11]))


def test_200_tensors_take_one_launch_per_step(backend):
    params = make_params(backend, [(7,)] * 150 + [(3, 5)] * 50)
    opt = optim.Adam(params, lr=1e-3)
    b = params[0].backend
    loss = sum((p * p).sum() for p in params)
    loss.backward()
    before = b.launch_count
    for _ in range(3):
        opt.step()
    assert b.launch_count - before == 3
    # every parameter and gradient is a view of the one flat buffer
    (flat,) = opt.flat_groups
    assert flat.numel == 150 * 7 + 50 * 15
    assert all(p.array.base is flat.data for p in params)
    assert all(p.grad.array.base is flat.grad for p in params)


def test_backward_accumulates_into_the_flat_gradient_buffer():
    params = make_params("numpy", [(3,), (2, 2)])
    opt = optim.SGD(params, lr=0.1)
    (flat,) = opt.flat_groups
    (params[0].sum() * 2 + params[1].sum()).backward()
    np.testing.assert_array_equal(flat.grad, [2, 2, 2, 1, 1, 1, 1])
    (params[0].sum()).backward()
    np.testing.assert_array_equal(flat.grad, [3, 3, 3, 1, 1, 1, 1])
    opt.zero_grad()
    assert params[0].grad is None and params[1].grad is None  # PyTorch's default
    params[1].sum().backward()  # written straight into its slot
    assert params[1].grad.array.base is flat.grad
    before = params[0].numpy().copy()
    opt.step()  # the slot of params[0], which got no gradient, is zeroed; params[0] is skipped
    np.testing.assert_array_equal(flat.grad, [0, 0, 0, 1, 1, 1, 1])
    assert params[0].grad is None
    np.testing.assert_array_equal(params[0].numpy(), before)
    opt.zero_grad(set_to_none=False)  # zeroes existing gradients; None stays None, as in PyTorch
    assert not flat.grad.any() and params[0].grad is None and params[1].grad is not None


def test_one_launch_per_param_group_and_dtype():
    a, b = make_params("numba", [(3,), (4,)])
    c = make_params("numba", [(2,)], dtype="float64")[0]
    opt = optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
    for p in (a, b, c):
        p.sum().backward()
    backend = a.backend
    before = backend.launch_count
    opt.step()
    assert backend.launch_count - before == 2
    np.testing.assert_allclose(c.numpy(), make_params("numba", [(2,)], dtype="float64")[0].numpy() - 0.5)


@CAPTURABLE
@pytest.mark.parametrize("name,variant", OPT_CASES)
def test_state_dict_round_trip_mid_training_is_exact(name, variant, capturable):
    straight, _ = train("numba", name, variant, 8)  # host scalars: the device form is bit-identical
    # 4 steps, save, rebuild everything from the saved state, 4 more steps
    params = make_params("numba", ((3, 4), (4,), (2, 3, 2)))
    opt = build(name, variant, params, capturable=capturable)
    target = [bg.tensor(np.ones(p.shape, "float32"), device="numba") for p in params]

    def steps(opt, params, n):
        for _ in range(n):
            opt.zero_grad()
            sum(((p - t) ** 2).sum() for p, t in zip(params, target)).backward()
            opt.step()

    steps(opt, params, 4)
    saved = opt.state_dict()
    # torch's layout: capturable optimizers save the step as a float32 tensor
    assert all(isinstance(st["step"], bg.Tensor) == capturable for st in saved["state"].values())
    assert [int(st["step"]) for st in saved["state"].values()] == [4, 4, 4]
    values = [p.numpy() for p in params]
    params2 = [bg.tensor(v, device="numba", requires_grad=True) for v in values]
    opt2 = build(name, variant, params2, lr=123.0)  # hyperparameters come back from the state_dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["capturable"] == capturable
    steps(opt2, params2, 4)
    for a, b in zip(params2, straight):
        np.testing.assert_array_equal(a.numpy(), b)


def test_state_dict_is_a_copy_and_in_torch_layout():
    _, opt = train("numpy", "adam", 1, 3)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    st = sd["state"][1]
    assert st["step"] == 3 and set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    st["exp_avg"].array[...] = 99
    assert not np.any(opt.state_dict()["state"][1]["exp_avg"].numpy() == 99)


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    _, opt = train("numpy", "adam", 0, 2)
    good = opt.state_dict()
    other = optim.Adam(make_params("numpy", [(3, 4), (5,), (2, 3, 2)]), lr=0.5)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"state 'exp_avg' has shape \(4,\).*\(5,\)"):
        other.load_state_dict(good)
    after = other.state_dict()
    assert after["param_groups"][0]["lr"] == 0.5 and before["state"].keys() == after["state"].keys()
    with pytest.raises(ValueError, match="state_dict has 3 parameters, the optimizer has 2"):
        optim.Adam(make_params("numpy", [(3, 4), (4,)])).load_state_dict(good)


def test_replaced_parameter_and_gradient_are_picked_up():
    params = make_params("numpy", [(3,), (2,)])
    opt = optim.SGD(params, lr=1.0)
    params[0].data = bg.tensor([10.0, 20.0, 30.0])  # same shape: copied into the flat buffer
    params[0].grad = bg.tensor([1.0, 1.0, 1.0])
    params[1].grad = None
    opt.step()
    np.testing.assert_allclose(params[0].numpy(), [9, 19, 29])
    assert params[0].array.base is opt.flat_groups[0].data


def test_parameter_with_new_shape_is_reflattened_with_a_warning():
    params = make_params("numpy", [(3,), (2,)])
    opt = optim.Adam(params, lr=0.1)
    params[1].sum().backward()
    opt.step()
    params[0].data = bg.zeros(5)
    with pytest.warns(RuntimeWarning, match="re-flattening"):
        opt.zero_grad()
    (params[0].sum() + params[1].sum()).backward()
    opt.step()
    assert opt.flat_groups[0].numel == 7
    assert params[0].numpy()[0] < 0  # stepped against the gradient


def test_add_param_group_after_construction():
    a, b = make_params("numpy", [(2,), (3,)])
    opt = optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 1.0})
    (a.sum() + b.sum()).backward()
    b0 = b.numpy()
    opt.step()
    np.testing.assert_allclose(b.numpy(), b0 - 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="more than one param group"):
        opt.add_param_group({"params": [a]})


@pytest.mark.parametrize("cls,kwargs,match", [
    (optim.SGD, dict(lr=-1), "Invalid learning rate"),
    (optim.SGD, dict(lr=0.1, momentum=-0.5), "Invalid momentum"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (optim.Adam, dict(betas=(0.9, -0.1)), "beta parameter at index 1"),
    (optim.AdamW, dict(eps=-1e-8), "Invalid epsilon"),
    (optim.Adagrad, dict(lr_decay=-1), "lr_decay"),
    (optim.Adadelta, dict(rho=1.5), "rho"),
    (optim.RMSprop, dict(alpha=-0.1), "alpha"),
    (optim.Adam, dict(weight_decay=-1), "weight_decay"),
])
def test_bad_hyperparameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(make_params("numpy", [(2,)]), **kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([bg.zeros(3, requires_grad=True) * 2], lr=0.1)
    optim.SGD([bg.zeros(3)], lr=0.1).step()  # a leaf not requiring grad is accepted (and skipped), as in torch
    with pytest.raises(TypeError, match="single tensor"):
        optim.SGD(bg.zeros(3, requires_grad=True), lr=0.1)


def _sched_lrs(make, n=7, lr=1.0):
    opt = optim.SGD(make_params("numpy", [(1,)]), lr=lr)
    s = make(opt)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        s.step()
        out.append(opt.param_groups[0]["lr"])
    return out, s, opt


def test_schedulers_follow_torch_formulas():
    lrs, _, _ = _sched_lrs(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5))
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    lrs, _, _ = _sched_lrs(lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9))
    np.testing.assert_allclose(lrs, [0.9 ** k for k in range(8)])
    lrs, _, _ = _sched_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.1))
    np.testing.assert_allclose(lrs[:5], [0.1 + 0.9 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)])
    lrs, _, _ = _sched_lrs(lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=3))
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.75, 1, 1, 1, 1, 1])


def test_reduce_lr_on_plateau():
    opt = optim.SGD(make_params("numpy", [(1,)]), lr=1.0)
    s = lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5)
    for metric in [5, 4, 4, 4, 4, 3, 3, 3, 3]:
        s.step(metric)
    # plateau after 4: three bad epochs (> patience 2) -> halve; again after 3
    assert opt.param_groups[0]["lr"] == 0.25
    with pytest.raises(ValueError, match="factor"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.5)


def test_scheduler_state_dict_resumes_exactly():
    lrs, s, _ = _sched_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10), n=3)
    opt2 = optim.SGD(make_params("numpy", [(1,)]), lr=1.0)
    s2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    s2.load_state_dict(s.state_dict())
    s.step()
    s2.step()
    assert s2.get_last_lr() == s.get_last_lr()


def test_clip_grad_norm_is_fused_over_the_flat_buffer(backend):
    params = make_params(backend, [(3,), (4,)])
    optim.SGD(params, lr=0.1)
    for p in params:
        p.sum().backward()  # every gradient element 1
        p.grad.array[...] = p.grad.array * 2
    total = optim.clip_grad_norm_(params, max_norm=1.0)
    assert abs(total.item() - math.sqrt(7 * 4)) < 1e-5
    norm = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in params))
    assert abs(norm - 1.0) < 1e-4
    # already small: untouched
    total2 = optim.clip_grad_norm_(params, max_norm=10.0)
    assert abs(total2.item() - 1.0) < 1e-4
    assert abs(math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in params)) - 1.0) < 1e-4


def test_clip_grad_norm_inf_norm_and_unflattened_params():
    a = bg.tensor([3.0, -4.0], requires_grad=True)
    (a * a).sum().backward()  # grad = 2a = [6, -8]
    total = optim.clip_grad_norm_([a], max_norm=4.0, norm_type=math.inf)
    assert total.item() == pytest.approx(8.0)
    np.testing.assert_allclose(a.grad.numpy(), [3.0, -4.0], rtol=1e-5)


def test_gradients_written_into_flat_slots_equal_plain_gradients(backend):
    """Linear's VJP writes weight gradients straight into the flat buffer; they must equal bg.grad's."""
    from backprop_gpu.app import models
    from backprop_gpu.nn import functional as F

    bg.manual_seed(0)
    model = models.mlp(6, 3, (8, 8)).to(backend)
    shared = model[0]  # a layer used twice: its second gradient must accumulate, not overwrite
    rng = np.random.default_rng(0)
    x = bg.tensor(rng.random((5, 6), dtype=np.float32), device=backend)
    y = bg.tensor(rng.integers(0, 3, 5), device=backend)

    def loss():
        return F.cross_entropy(model(x), y) + shared(x).sum() * 0.1

    params = list(model.parameters())
    expected = [g.numpy() for g in bg.grad(loss(), params)]
    opt = optim.SGD(params, lr=0.1)
    for _ in range(2):  # the second round starts from zero_grad()'s None gradients
        opt.zero_grad()
        loss().backward()
        for p, e in zip(params, expected):
            assert p.grad.array.base is opt.flat_groups[0].grad
            np.testing.assert_allclose(p.grad.numpy(), e, rtol=1e-6, atol=1e-7)


# --- parameters without a gradient are skipped, as torch.optim skips them ----------------------
# Steps 0-1 all train; 2-3 p1 is frozen; at 4 p1 is unfrozen and p2 takes no part in the loss; 5 all.
# From step 4 the parameters' step counts differ, so a step is one masked launch per count.
_SKIP_SCHEDULE = [(True, True, True), (True, True, True), (True, False, True), (True, False, True),
                  (True, True, False), (True, True, True)]
_SKIP_LAUNCHES = [1, 1, 1, 1, 2, 3]


def _skip_schedule_step(params, opt, weights, used):
    """One step of the schedule, for bg or torch tensors alike."""
    params[1].requires_grad_(used[1])
    opt.zero_grad()
    sum(((p - 1) ** 2 * w).sum() for p, w, u in zip(params, weights, used) if u).backward()
    opt.step()


@CAPTURABLE
@pytest.mark.parametrize("name,variant", OPT_CASES)
def test_parameters_without_a_gradient_are_skipped(backend, name, variant, capturable):
    """Capturable: the parameters that stepped together share one device count; a step in which only
    some of them have a gradient splits them, so the launches per step are the same as with host counts."""
    _simulator_subset(backend, variant, capturable)
    shapes = [(3, 4), (4,), (2, 3)]
    params = make_params(backend, shapes, dtype="float64")
    weights = [bg.tensor(np.random.default_rng(i).uniform(0.5, 2, s), device=backend) for i, s in enumerate(shapes)]
    opt = build(name, variant, params, lr=0.05, capturable=capturable)
    # the reference: each parameter alone in its own optimizer, stepped only when it has a gradient
    alone = [bg.tensor(p.numpy(), device=backend, requires_grad=True) for p in params]
    solo = [build(name, variant, [a], lr=0.05) for a in alone]
    b = params[0].backend
    for k, used in enumerate(_SKIP_SCHEDULE):
        before = [p.numpy().copy() for p in params]
        n0 = b.launch_count
        _skip_schedule_step(params, opt, weights, used)
        assert b.launch_count - n0 == _SKIP_LAUNCHES[k], k
        for i, u in enumerate(used):
            if u:
                solo[i].zero_grad()
                ((alone[i] - 1) ** 2 * weights[i]).sum().backward()
                solo[i].step()
            else:  # not moved, not decayed, and its .grad stays None
                assert params[i].grad is None
                np.testing.assert_array_equal(params[i].numpy(), before[i])
        for p, a in zip(params, alone):
            np.testing.assert_allclose(p.numpy(), a.numpy(), rtol=1e-13, atol=1e-15)
    assert [int(st["step"]) for st in opt.state_dict()["state"].values()] == [6, 4, 5]


@CAPTURABLE
def test_skipped_parameters_match_torch_optim(capturable):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (4,), (2, 3)]
    weights = [np.random.default_rng(i).uniform(0.5, 2, s) for i, s in enumerate(shapes)]
    for name, variant in OPT_CASES:
        start = [p.numpy() for p in make_params("numpy", shapes, dtype="float64")]
        ours = [bg.tensor(s, requires_grad=True) for s in start]
        theirs = [torch.tensor(s, requires_grad=True) for s in start]
        g = group_for(name, variant, lr=0.05)
        opt = optim.OPTIMIZERS[name](ours, capturable=capturable, **g)
        topt = getattr(torch.optim, type(opt).__name__)(theirs, **g)
        for used in _SKIP_SCHEDULE:
            _skip_schedule_step(ours, opt, [bg.tensor(w) for w in weights], used)
            _skip_schedule_step(theirs, topt, [torch.tensor(w) for w in weights], used)
        for a, t in zip(ours, theirs):
            np.testing.assert_allclose(a.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_load_state_dict_refuses_missing_moments_and_restores_per_parameter_steps():
    params = make_params("numpy", [(3,), (2,)], dtype="float64")
    opt = optim.Adam(params, lr=0.1)
    for used in ((True, True), (True, False), (True, True)):
        opt.zero_grad()
        sum((p * p).sum() for p, u in zip(params, used) if u).backward()
        opt.step()
    sd = opt.state_dict()
    assert [sd["state"][i]["step"] for i in (0, 1)] == [3, 2]
    fresh = optim.Adam(make_params("numpy", [(3,), (2,)], dtype="float64"), lr=0.1)
    sd["state"][1]["step"] = bg.tensor(2.0)  # torch keeps it as a 0-d tensor
    fresh.load_state_dict(sd)
    assert fresh.state_dict()["state"][1]["step"] == 2
    np.testing.assert_array_equal(fresh.state_dict()["state"][1]["exp_avg"].numpy(), sd["state"][1]["exp_avg"].numpy())
    del sd["state"][1]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"parameter 1: state \['exp_avg_sq'\] missing after 2 step"):
        fresh.load_state_dict(sd)
    sd["state"][1]["step"] = -1
    with pytest.raises(ValueError, match="step -1 is not a count"):
        fresh.load_state_dict(sd)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_capturable_follows_schedulers_and_lr_writes_like_host_scalars(name):
    """The device lr is rewritten (one fill launch) in the steps after group['lr'] changed, whoever
    changed it; the result is bit-identical to the host-scalar form."""
    runs = []
    for capturable in (False, True):
        params = make_params("numba", [(4, 3), (5,)])
        opt = build(name, 1, params, lr=0.1, capturable=capturable)
        sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        for k in range(6):
            opt.zero_grad()
            sum((p ** 2).sum() for p in params).backward()
            opt.step()
            if capturable:  # the lr this step read on the device
                (f,), = opt._flats
                assert float(f.lr[0]) == opt.param_groups[0]["lr"]
            sched.step()
            if k == 3:
                opt.param_groups[0]["lr"] = 0.3  # as a user would
        runs.append([p.numpy() for p in params])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="capturable must be True or False, got 'yes'"):
        optim.SGD(make_params("numpy", [(2,)]), lr=0.1, capturable="yes")
