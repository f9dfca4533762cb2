"""``bg.autograd.Function``: user-defined ops with PyTorch's API, against torch and finite differences."""
import numpy as np
import pytest

import backprop_gpu as bg
from helpers import x64


def _cube(lib):
    class Cube(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale=1.0):
            ctx.save_for_backward(x)
            ctx.scale = scale
            return x ** 3 * scale

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            assert ctx.needs_input_grad[1] is False  # the scale is a number
            return grad * 3 * x ** 2 * ctx.scale, None
    return Cube


def _mul(lib):
    class Mul(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return (grad * b if ctx.needs_input_grad[0] else None), (grad * a if ctx.needs_input_grad[1] else None)
    return Mul


def test_values_and_gradients_match_torch(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x, y = x64(backend, a), x64(backend, b)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out = (_cube(bg).apply(x, 2.0) * _mul(bg).apply(x, y)).sum()
    tout = (_cube(torch).apply(tx, 2.0) * _mul(torch).apply(tx, ty)).sum()
    out.backward()
    tout.backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-12)
    assert bg.gradcheck(lambda t: _cube(bg).apply(t, 0.5), [x64(backend, a)])


def test_a_backward_of_differentiable_ops_gives_second_derivatives(backend):
    x = x64(backend, [0.5, -1.5, 2.0])
    (g,) = bg.grad(_cube(bg).apply(x, 1.0).sum(), [x], create_graph=True)
    (gg,) = bg.grad(g.sum(), [x])
    np.testing.assert_allclose(gg.numpy(), 6 * x.numpy(), rtol=1e-12)


def test_only_inputs_that_require_grad_get_one(backend):
    x, c = x64(backend, [1.0, 2.0]), x64(backend, [3.0, 4.0], grad=False)
    _mul(bg).apply(x, c).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])
    assert c.grad is None
    with bg.no_grad():
        assert not _mul(bg).apply(x, c).requires_grad


def test_a_saved_tensor_changed_in_place_is_an_error(backend):
    x = x64(backend, [1.0, 2.0])
    c = x64(backend, [3.0, 4.0], grad=False)
    y = _mul(bg).apply(x, c).sum()
    c += 1
    with pytest.raises(RuntimeError, match="needed by function .*modified by an in-place operation"):
        y.backward()


def test_bad_backward_results_are_named(backend):
    class Wrong(bg.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, grad):
            return grad
    x = x64(backend, [1.0])
    with pytest.raises(RuntimeError, match=r"Wrong.backward returned an incorrect number of gradients \(expected 2, "
                                           r"got 1\)"):
        Wrong.apply(x, 2).sum().backward()

    class NotTensor(Wrong):
        @staticmethod
        def backward(ctx, grad):
            return 1.0, None
    with pytest.raises(TypeError, match="NotTensor.backward returned a float as gradient 0"):
        NotTensor.apply(x, 2).sum().backward()

    class Two(Wrong):
        @staticmethod
        def forward(ctx, x, k):
            return x, x * k
    with pytest.raises(NotImplementedError, match="Two.forward returned 2 outputs"):
        Two.apply(x, 2)


def test_returning_an_input_gives_a_new_tensor(backend):
    class Identity(bg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad * 2
    x = x64(backend, [1.0, 2.0])
    y = Identity.apply(x)
    assert y is not x and y.requires_grad and not np.shares_memory(y.numpy(), x.numpy())
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_a_non_differentiable_output_is_a_constant(backend):
    class ArgmaxOf(bg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = bg.tensor(x.numpy().argmax(), device=x.backend).double()
            ctx.mark_non_differentiable(out)
            return out

        @staticmethod
        def backward(ctx, grad):  # pragma: no cover - never called for a non-differentiable output
            raise AssertionError("backward of a non-differentiable output")
    x = x64(backend, [0.1, 3.0, -1.0])
    y = ArgmaxOf.apply(x)
    assert not y.requires_grad and y.grad_fn is None and float(y.numpy()) == 1.0
