"""bernoulli, normal, multinomial and the in-place random fills: shapes, dtypes, statistics, and the
zero gradient torch gives a sample drawn from tensors that require grad."""
import numpy as np
import pytest

import backprop_gpu as bg

N = 20000


def test_bernoulli_of_probabilities(backend):
    bg.manual_seed(1)
    p = bg.tensor(np.array([0.0, 0.25, 1.0] * (N // 3), np.float32), device=backend)
    out = bg.bernoulli(p).numpy()
    assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    assert (out[0::3] == 0).all() and (out[2::3] == 1).all()
    assert abs(out[1::3].mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / (N // 3))
    q = bg.zeros(N, device=backend).bernoulli_(0.75).numpy()
    assert abs(q.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / N)


def test_normal_forms_and_statistics(backend):
    bg.manual_seed(2)
    z = bg.normal(3.0, 0.5, size=(N,), device=backend).numpy()
    assert z.dtype == np.float32 and abs(z.mean() - 3) < 4 * 0.5 / np.sqrt(N) and abs(z.std() - 0.5) < 0.02
    mean = bg.tensor(np.array([-1.0, 5.0], np.float32), device=backend)
    std = bg.tensor(np.array([[0.1], [2.0]], np.float32), device=backend)
    w = bg.normal(mean, std)  # broadcast to (2, 2)
    assert w.shape == (2, 2)
    t = bg.empty(N, device=backend).normal_(1.0, 2.0).numpy()
    assert abs(t.mean() - 1) < 4 * 2 / np.sqrt(N) and abs(t.std() - 2) < 0.06
    u = bg.empty(N, device=backend).uniform_(-2.0, 4.0).numpy()
    assert u.min() >= -2 and u.max() < 4 and abs(u.mean() - 1) < 0.06


def test_samples_of_grad_tensors_have_zero_gradients_as_in_torch(backend):
    torch = pytest.importorskip("torch")
    for m, dev in ((bg, {"device": backend}), (torch, {})):
        mean = m.zeros(4, **dev).requires_grad_(True)
        std = m.ones(4, **dev).requires_grad_(True)
        out = m.normal(mean, std)
        assert out.requires_grad
        out.sum().backward()
        np.testing.assert_array_equal(np.asarray(mean.grad.numpy()), np.zeros(4))
        np.testing.assert_array_equal(np.asarray(std.grad.numpy()), np.zeros(4))


def test_multinomial_with_and_without_replacement(backend):
    bg.manual_seed(3)
    w = bg.tensor(np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 2.0]]), device=backend)
    draws = bg.multinomial(w, N, replacement=True).numpy()
    assert draws.shape == (2, N) and draws.dtype == np.int64
    assert not (draws[0] == 1).any() and not (draws[1] == 0).any()
    assert abs((draws[0] == 2).mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / N)
    once = bg.multinomial(bg.tensor(np.array([1.0, 2.0, 3.0, 4.0]), device=backend), 4).numpy()
    assert sorted(once.tolist()) == [0, 1, 2, 3]  # without replacement: each category once
    first = np.array([bg.multinomial(bg.tensor(np.array([1.0, 1.0, 8.0]), device=backend), 1).numpy()[0]
                      for _ in range(400)])
    assert abs((first == 2).mean() - 0.8) < 4 * np.sqrt(0.8 * 0.2 / 400)
    with pytest.raises(RuntimeError, match=r"cannot sample n_sample > prob_dist.size\(-1\)"):
        bg.multinomial(w, 4)
    with pytest.raises(RuntimeError, match="must be 1 or 2 dim"):
        bg.multinomial(bg.ones(2, 2, 2, device=backend), 1)


def test_in_place_fills_refuse_a_leaf_requiring_grad(backend):
    w = bg.zeros(3, device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place change of a leaf tensor that requires grad"):
        w.normal_()
    with bg.no_grad():
        w.uniform_(0.0, 1.0)
    assert (w.numpy() >= 0).all()


def test_logspace_and_reflected_remainder_match_torch(backend):
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(bg.logspace(-1, 2, 7, base=3.0, device=backend).numpy(),
                               torch.logspace(-1, 2, 7, base=3.0).numpy(), rtol=1e-6)
    a = np.array([-3.5, 0.5, 4.0])
    np.testing.assert_allclose((7.5 % bg.tensor(a, device=backend)).numpy(), (7.5 % torch.tensor(a)).numpy())
    p = bg.tensor(np.array([0.0, 1.0] * 50, np.float32), device=backend)
    np.testing.assert_array_equal(bg.zeros(100, device=backend).bernoulli_(p).numpy(), p.numpy())
