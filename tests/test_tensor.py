"""The Tensor: dtype rules, host access and metadata, factories, casts, views and in-place ops."""
import numpy as np
import pytest

import backprop_gpu as bg


# -- dtype rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data,dtype", [
    (np.zeros(2), np.float64),  # NumPy input keeps its dtype
    (np.zeros(2, dtype=np.float32), np.float32),
    (np.float64(1.5), np.float64),
    (np.arange(3, dtype=np.int32), np.int32),
    ([1.0, 2.0], np.float32),  # Python floats default to float32
    (3.5, np.float32),
    ([[1, 2.5], [3, 4]], np.float32),
    ([1, 2], np.int64),
    (7, np.int64),
    ([True, False], np.bool_),
])
def test_dtype_of_new_tensors(backend, data, dtype):
    t = bg.tensor(data, device=backend)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))
    assert bg.tensor(data, dtype="float64", device=backend).dtype == np.float64  # an explicit dtype wins


def test_factory_dtypes(backend):
    for t in (bg.zeros(2, device=backend), bg.ones(2, 3, device=backend), bg.full((2,), 1.5, device=backend),
              bg.empty(2, device=backend), bg.randn(2, device=backend), bg.rand(2, device=backend),
              bg.arange(0.0, 1.0, 0.25, device=backend)):
        assert t.dtype == np.float32
    assert bg.arange(5, device=backend).dtype == np.int64
    assert bg.zeros(2, dtype="float64", device=backend).dtype == np.float64
    assert bg.randn(3, dtype=np.float64, device=backend).dtype == np.float64


EXPRESSIONS = {
    "mul": lambda x: x * 2.0, "rmul": lambda x: 2.0 * x, "add_int": lambda x: x + 1, "rsub": lambda x: 1 - x,
    "div": lambda x: x / 3, "rdiv": lambda x: 3.0 / x, "pow": lambda x: x ** 2, "rpow": lambda x: 2 ** x,
    "np_scalar": lambda x: x * np.float64(2.0), "np_scalar_left": lambda x: np.float64(2.0) * x,
    "np_scalar_pow": lambda x: x ** np.float64(2.0), "maximum": lambda x: bg.maximum(x, 0.1),
    "where": lambda x: bg.where(x > 0, x, 0.0), "clip": lambda x: bg.clip(x, -1.0, 1.0),
    "leaky_relu": lambda x: bg.leaky_relu(x, 0.2), "mean": lambda x: x.mean() * 0.5,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_python_scalars_keep_the_tensor_dtype(backend, name, dtype):
    """float32 * 2.0 stays float32 (and float64 stays float64); so does the leaf's gradient."""
    x = bg.tensor(np.array([0.5, 1.5], dtype=dtype), device=backend, requires_grad=True)
    y = EXPRESSIONS[name](x)
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype


def test_mixed_precision_promotes_like_numpy(backend):
    a = bg.tensor(np.ones(2, dtype=np.float32), device=backend, requires_grad=True)
    b = bg.tensor(np.ones(2), device=backend, requires_grad=True)
    y = a * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_casts(backend):
    x = bg.tensor([1.5, -2.5], device=backend, requires_grad=True)
    d = x.double()
    assert d.dtype == np.float64 and d.requires_grad
    (d * d).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, -5.0])
    assert x.float() is x and x.to(dtype="float32") is x and x.astype(np.float32) is x
    n = x.long()  # an integer result is a constant, as in PyTorch
    assert n.dtype == np.int64 and not n.requires_grad and n.tolist() == [1, -2]
    assert x.to(dtype="float16").dtype == np.float16


# -- host access and metadata ---------------------------------------------------------------------
def test_numpy_is_a_host_copy(backend):
    t = bg.tensor(np.arange(6.0).reshape(2, 3), device=backend, requires_grad=True)
    host = t.numpy()
    assert type(host) is np.ndarray and host.dtype == np.float64
    host[0, 0] = 99
    assert t.numpy()[0, 0] == 0  # a copy, even for a tensor that requires grad
    assert t.numpy() is not t.numpy()
    y = t * 2  # a non-leaf too
    y.numpy()[:] = 0
    np.testing.assert_array_equal(y.numpy(), np.arange(6.0).reshape(2, 3) * 2)


def test_metadata(backend):
    t = bg.tensor(np.arange(24.0).reshape(2, 3, 4), device=backend)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.dtype == np.float64 and t.ndim == 3 == t.dim() and t.numel() == 24
    assert t.size() == (2, 3, 4) and t.size(1) == 3 == t.size(-2) and t.size().numel() == 24  # torch's size()
    with pytest.raises(IndexError, match="dimension 3 is out of range for a tensor with 3 dimension"):
        t.size(3)
    assert len(t) == 2
    assert t.T.shape == (4, 3, 2)
    np.testing.assert_array_equal(t.T.numpy(), np.arange(24.0).reshape(2, 3, 4).T)
    assert t.device == bg.get_backend(backend).device
    assert str(t.device) in ("cpu", "cuda:0")
    assert t.is_leaf and t.grad is None and t.grad_fn is None and not t.requires_grad
    m = bg.tensor([[1.0, 2.0], [3.0, 4.0]], device=backend)
    np.testing.assert_array_equal(m.T.numpy(), [[1.0, 3.0], [2.0, 4.0]])
    assert m.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_item_and_conversions(backend):
    t = bg.tensor([[2.5]], device=backend)
    v = t.item()
    assert v == 2.5 and type(v) is float
    assert float(t) == 2.5 and int(bg.tensor(7, device=backend)) == 7
    i = bg.tensor(3, device=backend).item()
    assert i == 3 and type(i) is int
    assert bool(bg.tensor(1.0, device=backend)) and not bool(bg.tensor([0.0], device=backend))
    assert [10, 20, 30][bg.tensor(1, device=backend)] == 20  # __index__
    assert bg.tensor(2.5, device=backend, requires_grad=True).item() == 2.5


def test_repr(backend):
    r = repr(bg.tensor([1.0, 2.0], device=backend, requires_grad=True))
    assert r.startswith("tensor([1., 2.]") and "float32" in r and "requires_grad=True" in r
    assert ("device='cuda:0'" in r) == (bg.get_backend(backend).device.type == "cuda")


def test_tensor_copies_its_input_and_from_numpy_shares(backend):
    src = np.ones(3)
    t = bg.tensor(src, device=backend)
    src[0] = 5
    assert t.numpy()[0] == 1
    u = bg.tensor(t)  # from a tensor: a copy too
    with bg.no_grad():
        u.add_(1)
    assert t.numpy()[0] == 1 and u.numpy()[0] == 2
    shared = np.zeros(2)
    f = bg.from_numpy(shared)
    shared[1] = 3.0
    assert f.numpy()[1] == 3.0 and f.dtype == np.float64


def test_factories(backend):
    assert bg.zeros(2, 3, device=backend).shape == (2, 3) == bg.zeros((2, 3), device=backend).shape
    np.testing.assert_array_equal(bg.ones(2, device=backend).numpy(), [1, 1])
    np.testing.assert_array_equal(bg.full((2, 2), 7.0, device=backend).numpy(), np.full((2, 2), 7.0))
    assert bg.arange(5, device=backend).tolist() == [0, 1, 2, 3, 4]
    assert bg.arange(1, 7, 2, device=backend).tolist() == [1, 3, 5]
    r = bg.rand(1000, device=backend).numpy()
    assert 0 <= r.min() and r.max() < 1
    p = bg.randn(3, device=backend, requires_grad=True)
    assert p.requires_grad and p.is_leaf
    z = bg.zeros_like(p)
    assert z.shape == (3,) and z.dtype == np.float32 and not z.requires_grad
    z64 = bg.zeros_like(p, dtype="float64", requires_grad=True)
    assert z64.dtype == np.float64 and z64.requires_grad
    o = bg.ones_like(p, dtype="int64")
    assert o.tolist() == [1, 1, 1] and o.device == p.device


def test_factories_are_seeded(backend):
    bg.manual_seed(7)
    a, b = bg.randn(3, 2, device=backend).numpy(), bg.rand(4, device=backend).numpy()
    bg.manual_seed(7)
    np.testing.assert_array_equal(a, bg.randn(3, 2, device=backend).numpy())
    np.testing.assert_array_equal(b, bg.rand(4, device=backend).numpy())
    assert not np.array_equal(a, bg.randn(3, 2, device=backend).numpy())


# -- transpose spellings, views, clone ---------------------------------------------------------------
def test_transpose_spellings(backend):
    a = np.arange(6.0).reshape(2, 3)
    m = bg.tensor(a, device=backend)
    for t in (m.transpose(), m.transpose(1, 0), m.transpose(0, 1), m.transpose(-1, 0), m.permute(1, 0), m.T):
        np.testing.assert_array_equal(t.numpy(), a.T)
    np.testing.assert_array_equal(m.transpose((0, 1)).numpy(), a)  # a tuple is NumPy's permutation
    b = np.arange(24.0).reshape(2, 3, 4)
    c = bg.tensor(b, device=backend)
    np.testing.assert_array_equal(c.transpose(0, 2).numpy(), b.swapaxes(0, 2))  # torch.transpose
    np.testing.assert_array_equal(c.transpose(2, 0, 1).numpy(), b.transpose(2, 0, 1))
    np.testing.assert_array_equal(bg.transpose(c, (1, 2, 0)).numpy(), b.transpose(1, 2, 0))


def test_basic_indexing_gives_views(backend):
    x = bg.tensor(np.zeros((2, 3)), device=backend)
    x[1, 2].fill_(5.0)  # one element: a 0-d view, as in PyTorch
    x[0].add_(1.0)
    x[:, :1].mul_(3.0)
    x.reshape(6)[1:2].sub_(1.0)
    np.testing.assert_array_equal(x.numpy(), [[3, 0, 1], [0, 0, 5]])
    picked = x[bg.tensor([0, 0], device=backend)]  # integer arrays copy
    picked.zero_()
    assert x.numpy()[0, 0] == 3


def test_clone_is_a_differentiable_copy(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    c = x.clone()
    assert c.requires_grad and not c.is_leaf
    with bg.no_grad():
        c.detach().mul_(0)  # the clone's storage only
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    (x.clone() * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


# -- in-place ops ---------------------------------------------------------------------------------
def test_inplace_ops(backend):
    t = bg.tensor([1.0, 2.0, 3.0], device=backend)
    alias = t
    t.add_(1).mul_(2).sub_(1).div_(2)
    np.testing.assert_allclose(t.numpy(), [1.5, 2.5, 3.5])
    t.add_(bg.tensor([1.0, 1.0, 1.0], device=backend), alpha=2)
    np.testing.assert_allclose(t.numpy(), [3.5, 4.5, 5.5])
    t += 1
    t *= 2
    t -= 1
    t /= 2
    assert t is alias  # augmented assignment without grad is in place
    np.testing.assert_allclose(t.numpy(), [4.0, 5.0, 6.0])
    t[0] = 10.0
    t[1:] = bg.tensor([7.0, 8.0], device=backend)
    np.testing.assert_allclose(t.numpy(), [10.0, 7.0, 8.0])
    m = bg.zeros(2, 3, device=backend)
    m[bg.tensor([0, 1], device=backend), 2] = 5.0  # index tensors inside a tuple
    m[[1, 1], bg.tensor([0, 1], device=backend)] = bg.tensor([7.0, 8.0], device=backend)
    np.testing.assert_allclose(m.numpy(), [[0, 0, 5], [7, 8, 5]])
    t.copy_(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(t.numpy(), [1.0, 2.0, 3.0])
    t.fill_(4.0)
    assert t.tolist() == [4.0, 4.0, 4.0]
    t.zero_()
    assert t.tolist() == [0.0, 0.0, 0.0]
    assert t.dtype == np.float32


def test_inplace_on_a_leaf_requiring_grad(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place change of a leaf tensor that requires grad"):
        x.add_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        x[0] = 3.0
    with bg.no_grad():  # how optimizers update parameters
        x.add_(1)
        x[1] = 0.0
    np.testing.assert_allclose(x.numpy(), [2.0, 0.0])
    assert x.requires_grad and x.is_leaf


def test_augmented_assignment_with_grad_keeps_the_graph(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    total = bg.zeros(2, device=backend)
    for k in range(3):
        total += x * k  # recorded in place, as in torch
    assert total.requires_grad
    total.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_setitem_of_a_value_requiring_grad_is_recorded(backend):
    """Building a tensor from parts (``out[t] = h``), as torch records it: the buffer joins the graph."""
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    buf = bg.zeros(3, device=backend)
    buf[:2] = x * 2
    buf[1:] = x * x  # overwrites buf[1]: d/dx0 = 2 + 2 * x0, d/dx1 = 2 * x1
    assert buf.requires_grad and not buf.is_leaf
    np.testing.assert_allclose(buf.numpy(), [2.0, 1.0, 4.0])
    buf.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 4.0])
    with bg.no_grad():
        buf = bg.zeros(3, device=backend)
        buf[1:] = x
    assert not buf.requires_grad
    np.testing.assert_allclose(buf.numpy(), [0.0, 1.0, 2.0])


def test_inplace_change_keeps_earlier_consumers_on_the_old_value(backend):
    """An op recorded before an in-place change sends its gradient to what made the value it read."""
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    y = x * 2
    z = y + 1  # saves nothing: its gradient must not pass through the mul_ below
    y.mul_(3)
    (z.sum() + y.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0 + 6.0, 2.0 + 6.0])


def test_inplace_change_of_a_tensor_with_a_live_view_is_refused(backend):
    x = bg.tensor([1.0, 2.0, 3.0], device=backend, requires_grad=True)
    buf = x * 1
    head = buf[:2]  # a live view: its graph would not see buf's change
    with pytest.raises(RuntimeError, match="shares its storage"):
        buf[2] = 0.0
    del head
    buf[2] = 0.0  # the view is gone: recorded
    buf.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 0.0])
