"""conv2d, pooling and the CNN layers: forward against naive loops, gradients by gradcheck."""
import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import nn
from backprop_gpu.app import models


def naive_conv(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + b[None, :, None, None]


def naive_pool(x, k, stride, fn):
    n, c, h, w = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = fn(x[:, :, i * stride:i * stride + k, j * stride:j * stride + k], axis=(2, 3))
    return out


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (2, 0)])
def test_conv2d(backend, stride, pad):
    rng = np.random.default_rng(stride * 10 + pad)
    xn, wn, bn = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    x, w, b = (bg.tensor(a, device=backend, requires_grad=True) for a in (xn, wn, bn))
    np.testing.assert_allclose(bg.conv2d(x, w, b, stride, pad).numpy(), naive_conv(xn, wn, bn, stride, pad),
                               rtol=1e-10, atol=1e-12)
    assert bg.gradcheck(lambda x, w, b: bg.conv2d(x, w, b, stride=stride, padding=pad), [x, w, b])
    assert bg.gradcheck(lambda x, w: bg.conv2d(x, w, stride=stride, padding=pad), [x, w])


@pytest.mark.parametrize("k,stride", [(2, 2), (3, 1), (2, 1)])
def test_pooling(backend, k, stride):
    xn = np.random.default_rng(k).standard_normal((2, 2, 5, 5))
    x = bg.tensor(xn, device=backend, requires_grad=True)
    np.testing.assert_allclose(bg.max_pool2d(x, k, stride).numpy(), naive_pool(xn, k, stride, np.max))
    np.testing.assert_allclose(bg.avg_pool2d(x, k, stride).numpy(), naive_pool(xn, k, stride, np.mean), rtol=1e-12)
    assert bg.gradcheck(lambda x: bg.max_pool2d(x, k, stride), [x])
    assert bg.gradcheck(lambda x: bg.avg_pool2d(x, k, stride, padding=1), [x])


def test_conv_errors():
    with pytest.raises(ValueError, match=r"input \(2, 3, 5, 5\) and weight \(4, 2, 3, 3\) do not fit"):
        bg.conv2d(bg.zeros(2, 3, 5, 5), bg.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match="does not fit padded input"):
        bg.conv2d(bg.zeros(1, 1, 2, 2), bg.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) does not fit weight \(4, 2, 3, 3\)"):
        bg.conv2d(bg.zeros(1, 2, 5, 5), bg.zeros(4, 2, 3, 3), bg.zeros(3))
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"):
        bg.max_pool2d(bg.zeros(1, 1, 6, 6), 3, padding=2)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C, H, W\), got \(6, 6\)"):
        bg.max_pool2d(bg.zeros(6, 6), 2)


def test_max_pool_of_integers(backend):
    x = bg.tensor(np.arange(-8, 8, dtype=np.int64).reshape(1, 1, 4, 4), device=backend)
    np.testing.assert_array_equal(bg.max_pool2d(x, 2).numpy(), [[[[-3, -1], [5, 7]]]])
    np.testing.assert_array_equal(bg.max_pool2d(x, 3, 1, padding=1).numpy()[0, 0, 0], [-3, -2, -1, -1])


def test_batchnorm2d_and_cnn_train(backend):
    bn = nn.BatchNorm2d(3, device=backend)
    xn = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = bn(bg.tensor(xn, device=backend)).numpy()
    m, v = xn.mean((0, 2, 3), keepdims=True), xn.var((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (xn - m) / np.sqrt(v + 1e-5), rtol=1e-4, atol=1e-5)
    x64 = bg.tensor(xn.astype(np.float64), device=backend, requires_grad=True)
    assert bg.gradcheck(lambda x: bn.double()(x), [x64])

    bg.manual_seed(0)
    from backprop_gpu import optim
    import backprop_gpu.nn.functional as F

    cnn = models.small_cnn(64, 3).to(backend)
    data = np.random.default_rng(1).random((24, 64)).astype(np.float32)
    labels = (data[:, :32].sum(1) > data[:, 32:].sum(1)).astype(np.int64) + (data[:, 0] > 0.5)
    xt, yt = bg.tensor(data, device=backend), bg.tensor(labels, device=backend)
    opt = optim.Adam(cnn.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = F.cross_entropy(cnn(xt), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_model_builders():
    assert models.mlp(784, 10, hidden=(16, 16)).num_parameters() == 13002
    with pytest.raises(ValueError, match="square images"):
        models.small_cnn(60, 10)


def test_im2col_and_col2im_are_adjoint_and_differentiable(backend):
    rng = np.random.default_rng(3)
    x = bg.tensor(rng.standard_normal((2, 2, 5, 4)), device=backend, requires_grad=True)
    args = ((3, 2), (2, 1), (1, 0))
    cols = bg.ops.im2col(x, *args)
    c = bg.tensor(rng.standard_normal(cols.shape), device=backend, requires_grad=True)
    # <im2col(x), c> == <x, col2im(c)>
    lhs = float((cols.numpy() * c.numpy()).sum())
    rhs = float((x.numpy() * bg.ops.col2im(c, x.shape, *args).numpy()).sum())
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))
    assert bg.gradcheck(lambda x: bg.ops.im2col(x, *args), [x])
    assert bg.gradcheck(lambda c: bg.ops.col2im(c, x.shape, *args), [c])


def test_conv_second_order(backend):
    rng = np.random.default_rng(4)
    x = bg.tensor(rng.standard_normal((1, 2, 4, 4)), device=backend, requires_grad=True)
    w = bg.tensor(rng.standard_normal((3, 2, 3, 3)), device=backend, requires_grad=True)

    def grad_norm(x, w):
        (gw,) = bg.grad((bg.tanh(bg.conv2d(x, w, padding=1)) ** 2).sum(), w, create_graph=True)
        return (gw * gw).sum()
    assert bg.gradcheck(grad_norm, [x, w])


def test_max_pool_gradient_goes_to_the_first_maximum(backend):
    x = bg.tensor(np.array([[[[1.0, 3.0], [3.0, 2.0]]]]), device=backend, requires_grad=True)
    bg.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[0, 1], [0, 0]])
