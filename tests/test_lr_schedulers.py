"""MultiStepLR, LambdaLR, OneCycleLR and SequentialLR: the lr (and momentum) sequences of torch's."""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from backprop_gpu.optim import lr_scheduler as S

torch = pytest.importorskip("torch")


def _pair(opt_name, **kw):
    ours = getattr(optim, opt_name)([bg.tensor(np.ones(3), requires_grad=True)], **kw)
    theirs = getattr(torch.optim, opt_name)([torch.nn.Parameter(torch.ones(3, dtype=torch.float64))], **kw)
    return ours, theirs


def _sequence(opt, sched, steps, key="lr"):
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        out.append(g[key][0] if key == "betas" else g[key])
        opt.step()  # no gradients: nothing moves, and torch does not warn about the order
        sched.step()
    return out


CASES = {
    "multistep": ("SGD", dict(lr=0.1), lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 8], gamma=0.5), 12),
    "lambda": ("SGD", dict(lr=0.1), lambda m, o: m.LambdaLR(o, lambda e: 1 / (1 + e)), 8),
    "onecycle_cos": ("SGD", dict(lr=0.1, momentum=0.9),
                     lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=20), 20),
    "onecycle_linear_3phase": ("Adam", dict(lr=0.1),
                               lambda m, o: m.OneCycleLR(o, max_lr=0.5, epochs=3, steps_per_epoch=5, pct_start=0.4,
                                                         anneal_strategy="linear", three_phase=True), 15),
    "onecycle_no_momentum": ("Adam", dict(lr=0.1),
                             lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=9, cycle_momentum=False), 9),
    "sequential": ("SGD", dict(lr=0.1), lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.25, total_iters=4), m.ExponentialLR(o, gamma=0.9),
            m.StepLR(o, step_size=2, gamma=0.5)], milestones=[4, 7]), 14),
}


@pytest.mark.parametrize("name", list(CASES))
def test_lr_sequence_matches_torch(name):
    opt_name, kw, make, steps = CASES[name]
    ours, theirs = _pair(opt_name, **kw)
    s_ours, s_theirs = make(S, ours), make(torch.optim.lr_scheduler, theirs)
    np.testing.assert_allclose(_sequence(ours, s_ours, steps), _sequence(theirs, s_theirs, steps), rtol=1e-12)
    np.testing.assert_allclose(s_ours.get_last_lr(), s_theirs.get_last_lr(), rtol=1e-12)


@pytest.mark.parametrize("name", ["onecycle_cos", "onecycle_linear_3phase"])
def test_onecycle_momentum_matches_torch(name):
    opt_name, kw, make, steps = CASES[name]
    ours, theirs = _pair(opt_name, **kw)
    key = "betas" if opt_name == "Adam" else "momentum"
    s_ours, s_theirs = make(S, ours), make(torch.optim.lr_scheduler, theirs)
    np.testing.assert_allclose(_sequence(ours, s_ours, steps, key), _sequence(theirs, s_theirs, steps, key),
                               rtol=1e-12)


def test_resumed_schedules_continue_exactly():
    for name in ("multistep", "onecycle_cos", "sequential", "lambda"):
        opt_name, kw, make, steps = CASES[name]
        a, _ = _pair(opt_name, **kw)
        sa = make(S, a)
        _sequence(a, sa, steps // 2)
        state = sa.state_dict()
        b, _ = _pair(opt_name, **kw)
        sb = make(S, b)
        sb.load_state_dict(state)
        b.param_groups[0].update({k: v for k, v in a.param_groups[0].items() if k != "params"})
        rest = steps - steps // 2
        assert _sequence(b, sb, rest) == _sequence(a, sa, rest), name


def test_bad_arguments_are_named():
    o, _ = _pair("SGD", lr=0.1)
    with pytest.raises(ValueError, match="OneCycleLR needs total_steps, or both epochs and steps_per_epoch"):
        S.OneCycleLR(o, max_lr=1.0)
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        S.OneCycleLR(optim.Adagrad([bg.tensor(np.ones(2), requires_grad=True)]), max_lr=1.0, total_steps=5)
    s = S.OneCycleLR(o, max_lr=1.0, total_steps=2, cycle_momentum=False)
    s.step()
    s.step()
    with pytest.raises(ValueError, match="stepped 3 times, more than total_steps=2"):
        s.step()
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        S.LambdaLR(optim.SGD([{"params": [bg.tensor(np.ones(1), requires_grad=True)]},
                              {"params": [bg.tensor(np.ones(1), requires_grad=True)]}], lr=0.1), [lambda e: 1.0])
    with pytest.raises(ValueError, match="SequentialLR expects 1 milestone"):
        S.SequentialLR(o, [S.StepLR(o, 1), S.StepLR(o, 1)], milestones=[])
