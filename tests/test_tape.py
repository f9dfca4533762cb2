"""The tape's contracts: one calling convention, declared saves, gradient slots without a
registry, and the defects the old engine had with optimizers (each failed before the rework)."""
import gc
import weakref

import numpy as np
import pytest

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from backprop_gpu import nn, optim
from backprop_gpu.tape import engine
from backprop_gpu.tape.op import Op, apply


def _w(backend, seed=0, shape=(3, 3)):
    return bg.tensor(np.random.default_rng(seed).standard_normal(shape), device=backend, requires_grad=True)


def test_linear_of_a_weight_with_itself_is_right_with_and_without_an_optimizer(backend):
    """d/dW sum(C * (W @ W.T)) = (C + C.T) W; the old engine wrote one input's gradient over
    the other's once W had an empty flat-buffer slot."""
    c_np = np.random.default_rng(5).standard_normal((3, 3))  # not symmetric: the two terms differ
    for with_optimizer in (False, True):
        w = _w(backend)
        if with_optimizer:
            optim.SGD([w], lr=0.1).zero_grad()  # grads None: the first backward fills the slots
        (F.linear(w, w) * bg.tensor(c_np, device=backend)).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), (c_np + c_np.T) @ w.numpy(), rtol=1e-12)


def test_an_optimizer_may_be_built_between_forward_and_backward(backend):
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).to(backend).double()
    x = bg.tensor(np.random.default_rng(1).standard_normal((6, 4)), device=backend)
    ref = [p.grad.numpy() for p in _grads(model, x)]
    loss = model(x).sum()
    opt = optim.Adam(model.parameters(), lr=1e-2)  # rebinds every parameter to a flat buffer
    loss.backward()
    for p, r in zip(model.parameters(), ref):
        np.testing.assert_allclose(p.grad.numpy(), r, rtol=1e-12)
    opt.step()  # and the step sees those gradients
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


def _grads(model, x):
    model.zero_grad()
    model(x).sum().backward()
    out = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad()
    return [type("G", (), {"grad": g})() for g in out]


def test_building_optimizers_leaves_no_finalizers_or_registry(backend):
    params = [_w(backend, i) for i in range(4)]
    before = len(weakref.finalize._registry)
    for _ in range(50):
        optim.SGD(params, lr=0.1, momentum=0.9)
    gc.collect()
    assert len(weakref.finalize._registry) <= before
    assert not hasattr(engine, "GRAD_HOMES")


def test_first_gradient_goes_into_the_slot_the_optimizer_gave(backend):
    w = _w(backend)
    opt = optim.SGD([w], lr=0.1)
    slot = w._grad_slot
    assert slot is not None and w.grad is None
    (w * w).sum().backward()
    assert w.grad is slot  # written into the flat buffer, no new array
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.numpy(), rtol=1e-12)
    flat = opt.flat_groups[0]
    np.testing.assert_allclose(flat.grad, 2 * w.numpy().ravel(), rtol=1e-12)


def test_weight_gradients_are_written_by_their_product_straight_into_the_slot(backend, monkeypatch):
    """Linear's and matmul's weight gradients come out of the matrix product in the flat buffer
    (``into``): ``deliver`` gets the slot's own array and copies nothing. A batched product,
    whose gradient is summed over the batch, and a weight used twice, take the copying path."""
    rng = np.random.default_rng(3)
    x = bg.tensor(rng.standard_normal((5, 4)), device=backend)
    x3 = bg.tensor(rng.standard_normal((2, 5, 3)), device=backend)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(backend).double()
    m = _w(backend, 1, (3, 2))
    b = _w(backend, 2, (3, 3))

    def loss():
        return (model(x).sum() + (x3 @ m).sum() + (model(x) @ b).sum() + (x3 @ b @ b).sum())

    ref_loss = loss()
    ref_loss.backward()
    ref = {id(p): p.grad.numpy().copy() for p in [*model.parameters(), m, b]}
    opt = optim.SGD([*model.parameters(), m, b], lr=0.1)
    opt.zero_grad()
    copied = {}
    real = engine.deliver

    def spy(leaf, g, *args, **kwargs):
        copied.setdefault(id(leaf), g is not leaf._grad_slot.array)
        return real(leaf, g, *args, **kwargs)
    monkeypatch.setattr(engine, "deliver", spy)
    loss().backward()
    for p in [*model.parameters(), m, b]:
        np.testing.assert_allclose(p.grad.numpy(), ref[id(p)], rtol=1e-12)
        assert p.grad is p._grad_slot
    w0, w1 = model[0].weight, model[2].weight
    assert copied[id(w0)] is False and copied[id(w1)] is False  # written by the product itself
    assert copied[id(m)] is True  # (2, 3, 2) per-batch products summed: no slot-shaped product


def test_empty_slots_leave_out_a_tensor_that_is_two_inputs(backend):
    w, v = _w(backend, 0), _w(backend, 1)
    optim.SGD([w, v], lr=0.1).zero_grad()
    assert engine.empty_slots((w, w)) == (None, None)
    slots = engine.empty_slots((w, v))
    assert slots[0] is w._grad_slot.array and slots[1] is v._grad_slot.array
    (w * v).sum().backward()
    assert engine.empty_slots((w, v)) == (None, None)  # they hold gradients now: accumulate instead


def test_a_vjp_that_takes_into_must_take_needs():
    with pytest.raises(TypeError, match="declares `into` but not `needs`"):
        type("Bad", (Op,), {"name": "bad", "forward": staticmethod(lambda F, x: x),
                            "vjp": staticmethod(lambda F, g, out, x, into: (g,))})


class _ReadsUndeclared(Op):
    name = "reads_undeclared"
    saves = ()  # but the VJP below reads x
    forward = staticmethod(lambda F, x: x * 2)
    vjp = staticmethod(lambda F, g, out, x, needs: (g * x,))


class _Declared(_ReadsUndeclared):
    name = "declared"
    saves = ("x",)


def test_a_vjp_that_reads_what_its_op_does_not_save_fails(backend):
    prev = engine.check_saves(True)
    try:
        x = _w(backend)
        with pytest.raises(RuntimeError, match=r"input 0 of reads_undeclared .*not in the op's `saves`"):
            apply(_ReadsUndeclared, x).sum().backward()
        apply(_Declared, x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), x.numpy(), rtol=1e-12)
    finally:
        engine.check_saves(prev)


def test_saves_must_name_inputs_of_forward():
    with pytest.raises(TypeError, match=r"saves names \['y'\].*inputs: \['x'\]"):
        type("Bad", (Op,), {"name": "bad", "saves": ("y",), "forward": staticmethod(lambda F, x: x)})


def test_only_saved_inputs_are_version_checked(backend):
    x = _w(backend)
    c = bg.tensor(np.ones(3), device=backend)
    y = (x + c).sum()  # add saves nothing: changing c afterwards cannot change the gradient
    c += 1
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((3, 3)))
    z = (x * c).sum()
    c += 1
    with pytest.raises(RuntimeError, match="needed by mul"):
        z.backward()


def test_an_index_tensor_changed_in_place_after_use_is_an_error(backend):
    x = bg.tensor([1.0, 2.0, 3.0], device=backend, requires_grad=True)
    idx = bg.tensor([0, 1], device=backend)
    y = (x[idx] * 2).sum()
    idx[0] = 2
    with pytest.raises(RuntimeError, match="needed by getitem .*modified by an in-place operation"):
        y.backward()


def test_output_is_kept_only_when_saved(backend):
    x = _w(backend)
    assert (x + 1)._node.out is None and bg.exp(x)._node.out is not None


def test_grad_refuses_a_count_mismatch_of_outputs_and_grad_outputs(backend):
    x = _w(backend)
    a, b = (x * 2).sum(), (x * 3).sum()
    with pytest.raises(RuntimeError, match="one grad_output per output: got 1 grad_output.*for 2 output"):
        bg.grad([a, b], [x], grad_outputs=[bg.tensor(1.0, device=backend, dtype=x.dtype)])


def test_no_grad_decorates_generators():
    x = bg.tensor([1.0], requires_grad=True)

    @bg.no_grad()
    def gen():
        yield (x * 2).requires_grad
        yield (x * 3).requires_grad

    results = list(gen())
    assert results == [False, False] and bg.is_grad_enabled()
