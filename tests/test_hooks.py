"""Gradient hooks on tensors and forward hooks on modules, against torch's."""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import nn

torch = pytest.importorskip("torch")

A = np.random.default_rng(0).standard_normal((3, 4))


def _pair(backend):
    return bg.tensor(A, device=backend, requires_grad=True), torch.tensor(A, requires_grad=True)


def _close(ours, theirs):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_hooks_see_and_replace_gradients_as_torch(backend):
    out = {}
    for m, x in zip((bg, torch), _pair(backend)):
        seen = []
        y = x * 2
        y.register_hook(lambda g: seen.append(g.detach().clone()) or g * 10)  # a non-leaf: replaced
        x.register_hook(lambda g: g + 1)  # a leaf: once, on the sum of both paths
        y.retain_grad()
        ((y * y).sum() + (x * 3).sum()).backward()
        out[m] = (x.grad, y.grad, seen[0])
    for ours, theirs in zip(out[bg], out[torch]):
        _close(ours, theirs)


def test_post_accumulate_hooks_run_when_each_leaf_is_final_as_torch(backend):
    """A leaf used twice gets its hook once, with the summed gradient, and the order in which the
    leaves become final is torch's; an optimizer's flat-buffer slot and a tensor hook change nothing."""
    B = A[:, :2] + 1
    out = {}
    for m in (bg, torch):
        kw = dict(device=backend) if m is bg else {}
        w, v, u = (m.tensor(a, requires_grad=True, **kw) for a in (A, B, A[:2]))
        if m is bg:
            bg.optim.SGD([v], lr=0.1)  # v's gradient goes into a flat buffer's slot
        u.register_hook(lambda g: g * 3)
        seen = []
        for name, t in (("w", w), ("v", v), ("u", u)):
            t.register_post_accumulate_grad_hook(lambda t, name=name: seen.append((name, t.grad.detach().clone())))
        y = (w[:, :2] * v).sum() + (w * w).sum() + (u * 2).sum()
        y.backward()
        out[m] = seen
    assert [n for n, _ in out[bg]] == [n for n, _ in out[torch]]
    for (_, ours), (_, theirs) in zip(out[bg], out[torch]):
        _close(ours, theirs)


def test_post_accumulate_hooks_when_a_vjp_gives_no_gradient_match_torch(backend):
    """A Function whose backward returns None for an input: a leaf reached only that way still gets
    its hook, with no gradient, as in torch; one also used elsewhere gets it once, with the gradient
    it did receive."""
    out = {}
    for m in (bg, torch):
        class FirstOnly(m.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                return a * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2, None
        kw = dict(device=backend) if m is bg else {}
        a, b, c = (m.tensor(A, requires_grad=True, **kw) for _ in range(3))
        seen = []
        for name, t in (("a", a), ("b", b), ("c", c)):
            t.register_post_accumulate_grad_hook(
                lambda t, name=name: seen.append((name, None if t.grad is None else t.grad.detach().clone())))
        (FirstOnly.apply(a, b).sum() + FirstOnly.apply(a, c).sum() + (c * 3).sum()).backward()
        out[m] = seen
    assert sorted(n for n, _ in out[bg]) == sorted(n for n, _ in out[torch]) == ["a", "b", "c"]
    for (n, ours), (_, theirs) in zip(sorted(out[bg], key=lambda r: r[0]), sorted(out[torch], key=lambda r: r[0])):
        if n == "b":
            assert ours is None and theirs is None
        else:
            _close(ours, theirs)


def test_post_accumulate_hooks_need_a_leaf_and_skip_autograd_grad(backend):
    x = bg.tensor(A, device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)
    calls = []
    handle = x.register_hook(lambda g: None)
    handle.remove()
    x.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad is not None))
    bg.autograd.grad((x * x).sum(), [x])  # accumulates nothing: no hook, as in torch
    assert calls == []
    (x * x).sum().backward()
    assert calls == [True]


def test_removed_hook_no_longer_runs(backend):
    x = bg.tensor(A, device=backend, requires_grad=True)
    calls = []
    handle = x.register_hook(lambda g: calls.append(1))
    (x * 2).sum().backward()
    handle.remove()
    (x * 2).sum().backward()
    assert calls == [1]
    np.testing.assert_allclose(x.grad.numpy(), np.full(A.shape, 4.0))
    with x.register_hook(lambda g: g * 0):  # a handle is also a context manager
        (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(A.shape, 4.0))


def test_hooks_under_create_graph_give_differentiable_gradients(backend):
    grads = []
    for m, x in zip((bg, torch), _pair(backend)):
        y = x.tanh()
        y.register_hook(lambda g: g * y)  # the hook's result is part of the graph
        (g,) = m.autograd.grad(y.sum(), x, create_graph=True)
        g.sum().backward()
        grads.append(x.grad)
    _close(*grads)


def test_hook_errors_name_the_problem(backend):
    c = bg.tensor(A, device=backend)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        c.register_hook(lambda g: g)
    x = bg.tensor(A, device=backend, requires_grad=True)
    y = x * 1
    y.register_hook(lambda g: g.sum())  # the wrong shape: refused, naming both
    with pytest.raises(RuntimeError, match=r"shape \(\), but the tensor's is \(3, 4\)"):
        y.sum().backward()
    with pytest.raises(TypeError, match="callable"):
        x.register_hook(3)


def test_retain_grad_on_a_leaf_is_a_no_op(backend):
    x = bg.tensor(A, device=backend, requires_grad=True)
    x.retain_grad()
    y = x * 3
    y.retain_grad()
    assert y.retains_grad and not x.retains_grad
    y.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), np.ones(A.shape))
    np.testing.assert_allclose(x.grad.numpy(), np.full(A.shape, 3.0))


def test_forward_hooks_match_torch_and_bypass_fusion():
    """Hooks on a Linear followed by a ReLU (a pair Sequential fuses) still run, as in torch."""
    outs = {}
    torch_net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    ours = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    ours.load_state_dict({k: v.detach().numpy() for k, v in torch_net.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((6, 4))
    for m, net in ((bg, ours), (torch, torch_net)):
        seen = []
        net[0].register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
        net[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape) or out + 1)
        h = net[1].register_forward_hook(lambda mod, args, out: out * 3)
        y = net(m.tensor(x, dtype=m.float32))
        outs[m] = (y, [tuple(s) for s in seen])
        h.remove()
        outs[(m, "removed")] = net(m.tensor(x, dtype=m.float32))
    np.testing.assert_allclose(outs[bg][0].numpy(), outs[torch][0].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert outs[bg][1] == outs[torch][1] == [(6, 5)]
    np.testing.assert_allclose(outs[(bg, "removed")].numpy(), outs[(torch, "removed")].detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_removing_every_hook_restores_the_fused_path():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = bg.ones(2, 3)
    assert net(x).grad_fn.op.name == "linear_relu"
    handles = [net[0].register_forward_hook(lambda m, a, o: None), net[1].register_forward_pre_hook(lambda m, a: None)]
    assert net(x).grad_fn.op.name == "relu"  # called one by one, hooks and all
    for h in handles:
        h.remove()
    assert net(x).grad_fn.op.name == "linear_relu"
    assert not net[0]._has_hooks and not net[1]._has_hooks
