"""copy.deepcopy and pickle of tensors, parameters and modules, as in PyTorch."""
import copy
import pickle

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import nn, optim


def _trained(backend):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(backend)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = bg.tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32), device=backend)
    model(x).sum().backward()
    opt.step()
    return model, opt, x


def test_deepcopy_of_a_model_is_independent_of_it_and_of_its_optimizer(backend):
    model, opt, x = _trained(backend)
    snap = copy.deepcopy(model)
    before = [p.numpy() for p in model.parameters()]
    for p, q in zip(model.parameters(), snap.parameters()):
        assert type(q) is type(p) and q is not p and q.device == p.device and q.requires_grad
        np.testing.assert_array_equal(q.numpy(), p.numpy())
        np.testing.assert_array_equal(q.grad.numpy(), p.grad.numpy())
        assert q._grad_slot is None  # outside the optimizer's flat buffer
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()  # the original moves; the copy does not
    assert all(not np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before))
    for q, b in zip(snap.parameters(), before):
        np.testing.assert_array_equal(q.numpy(), b)
    snap.load_state_dict(model.state_dict())  # and it takes the trained weights back, as a best-model copy does
    np.testing.assert_array_equal(snap(x).numpy(), model(x).numpy())


def test_pickle_round_trips_tensors_parameters_and_models(backend):
    model, _, x = _trained(backend)
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())
    assert all(type(p) is nn.Parameter and p.device == x.device for p in back.parameters())
    t = bg.tensor([1.5, -2.0], device=backend, requires_grad=True)
    (t * t).sum().backward()
    u = pickle.loads(pickle.dumps(t))
    assert u.requires_grad and u.device == t.device and u.dtype == t.dtype
    np.testing.assert_array_equal(u.numpy(), t.numpy())
    np.testing.assert_array_equal(u.grad.numpy(), t.grad.numpy())


def test_non_leaf_tensors_are_refused_as_by_torch(backend):
    torch = pytest.importorskip("torch")
    y = bg.tensor([1.0], device=backend, requires_grad=True) * 2
    ty = torch.tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError):
        copy.deepcopy(ty)
    with pytest.raises(RuntimeError, match="only leaf tensors .* support deepcopy"):
        copy.deepcopy(y)
    with pytest.raises(RuntimeError, match="cannot pickle a tensor that requires grad and is not a leaf"):
        pickle.dumps(y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(y.detach())).numpy(), [2.0])
