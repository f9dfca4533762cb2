"""Every differentiable op: forward against NumPy, gradients against finite differences (float64),
on shapes and broadcasting patterns drawn by hypothesis, on every available backend."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import backprop_gpu as bg

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def t64(backend, arr, grad=True):
    return bg.tensor(np.asarray(arr, dtype=np.float64), device=backend, requires_grad=grad)


def rand(shape, seed, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def check(backend, fn, np_fn, *arrays):
    """Forward equals NumPy; gradients pass gradcheck."""
    ts = [t64(backend, a) for a in arrays]
    out = fn(*ts)
    np.testing.assert_allclose(out.numpy(), np_fn(*arrays), rtol=1e-10, atol=1e-12)
    assert bg.gradcheck(fn, ts)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (bg.maximum, np.maximum),
    "minimum": (bg.minimum, np.minimum),
    "pow": (lambda a, b: abs(a) ** b, lambda a, b: np.abs(a) ** b),
}


@pytest.mark.parametrize("name", list(BINARY))
@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=st.integers(0, 2**16))
def test_binary_ops_broadcast(backend, name, shapes, seed):
    fn, np_fn = BINARY[name]
    a, b = rand(shapes.input_shapes[0], seed), rand(shapes.input_shapes[1], seed + 1)
    if name == "div":
        b = np.where(np.abs(b) < 0.3, 1.0, b)
    if name == "pow":
        a = np.where(np.abs(a) < 0.3, 1.0, a)
    if name in ("maximum", "minimum"):
        b = b + 0.01  # keep ties (where the derivative jumps) away from the finite differences
    check(backend, fn, np_fn, a, b)


UNARY = {
    "neg": (lambda x: -x, np.negative, None),
    "exp": (bg.exp, np.exp, None),
    "log": (bg.log, np.log, (0.2, 3.0)),
    "sqrt": (bg.sqrt, np.sqrt, (0.2, 3.0)),
    "abs": (bg.abs, np.abs, None),
    "pow_scalar": (lambda x: x ** 3, lambda x: x ** 3, None),
    "pow_frac": (lambda x: x ** 0.5, np.sqrt, (0.2, 3.0)),
    "rpow": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, None),
    "clip": (lambda x: bg.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), None),
    "relu": (bg.relu, lambda x: np.maximum(x, 0), None),
    "leaky_relu": (lambda x: bg.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), None),
    "sigmoid": (bg.sigmoid, lambda x: 1 / (1 + np.exp(-x)), None),
    "tanh": (bg.tanh, np.tanh, None),
    "softplus": (bg.softplus, lambda x: np.log1p(np.exp(x)), None),
    "gelu": (bg.gelu, lambda x: x * 0.5 * (1 + __import__("scipy.special").special.erf(x / np.sqrt(2))), None),
    "gelu_tanh": (lambda x: bg.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), None),
}


@pytest.mark.parametrize("name", list(UNARY))
@SETTINGS
@given(shape=array_shapes(min_dims=0, max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_unary_ops(backend, name, shape, seed):
    fn, np_fn, rng = UNARY[name]
    x = rand(shape, seed, *(rng or (-2.0, 2.0)))
    if name in ("abs", "relu", "leaky_relu", "clip"):
        # finite differences straddling a kink disagree with any subgradient
        x = np.where(np.abs(x) < 0.05, 0.3, x)
        x = np.where(np.abs(x + 0.5) < 0.05, -0.8, x)
        x = np.where(np.abs(x - 0.7) < 0.05, 1.0, x)
    check(backend, fn, np_fn, x)


def test_where(backend):
    c = np.array([[True, False, True]])
    a, b = rand((2, 3), 1), rand((2, 1), 2)
    check(backend, lambda a, b: bg.where(bg.tensor(c, device=backend), a, b), lambda a, b: np.where(c, a, b), a, b)


@st.composite
def shape_and_axis(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                                   unique=True).map(tuple)))
    return shape, axis, draw(st.booleans())


REDUCTIONS = {
    "sum": (bg.sum, np.sum),
    "mean": (bg.mean, np.mean),
    "max": (bg.max, np.max),
    "min": (bg.min, np.min),
    "var": (bg.var, lambda x, axis, keepdims: np.var(x, axis=axis, keepdims=keepdims, ddof=1)),
    "std": (bg.std, lambda x, axis, keepdims: np.std(x, axis=axis, keepdims=keepdims, ddof=1)),
    "logsumexp": (bg.logsumexp, lambda x, axis, keepdims: __import__("scipy.special").special.logsumexp(
        x, axis=axis, keepdims=keepdims)),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@SETTINGS
@given(case=shape_and_axis(), seed=st.integers(0, 2**16))
def test_reductions(backend, name, case, seed):
    shape, axis, keepdims = case
    fn, np_fn = REDUCTIONS[name]
    x = rand(shape, seed)
    if name in ("var", "std"):
        n = np.prod([shape[a] for a in np.atleast_1d(axis if axis is not None else range(len(shape)))])
        if n < 2:
            return
    check(backend, lambda t: fn(t, axis=axis, keepdims=keepdims),
          lambda a: np_fn(a, axis=axis, keepdims=keepdims), x)


def test_max_ties_share_the_gradient(backend):
    x = t64(backend, [1.0, 3.0, 3.0, 2.0])
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 0.5, 0.5, 0])


def test_argmax_has_no_gradient(backend):
    x = t64(backend, [[1.0, 5.0, 2.0], [7.0, 0.0, 1.0]])
    am = x.argmax(axis=1)
    assert am.tolist() == [1, 0] and am.dtype == np.int64 and not am.requires_grad
    assert x.argmin().item() == 4


@SETTINGS
@given(batch=st.sampled_from([(), (2,), (2, 1), (1, 3)]), bbatch=st.sampled_from([(), (3,), (2, 3)]),
       n=st.integers(1, 3), k=st.integers(1, 3), m=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_batched_matmul(backend, batch, bbatch, n, k, m, seed):
    try:
        np.broadcast_shapes(batch, bbatch)
    except ValueError:
        return
    a, b = rand(batch + (n, k), seed), rand(bbatch + (k, m), seed + 1)
    check(backend, lambda x, y: x @ y, np.matmul, a, b)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3,)), ((3,), (2, 3, 4))])
def test_matmul_1d_operands(backend, sa, sb):
    check(backend, bg.matmul, np.matmul, rand(sa, 1), rand(sb, 2))


SHAPE_OPS = [
    ("reshape", lambda x: x.reshape(6, -1), lambda a: a.reshape(6, -1), (2, 3, 2)),
    ("flatten", lambda x: x.flatten(), lambda a: a.reshape(-1), (2, 3, 2)),
    ("flatten_1", lambda x: bg.flatten(x, 1), lambda a: a.reshape(2, -1), (2, 3, 2)),
    ("transpose", lambda x: x.T, lambda a: a.T, (2, 3, 4)),
    ("permute", lambda x: x.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), (2, 3, 4)),
    ("swapaxes", lambda x: bg.swapaxes(x, 0, 2), lambda a: a.swapaxes(0, 2), (2, 3, 4)),
    ("expand", lambda x: x.expand(4, -1, 3), lambda a: np.broadcast_to(a, (4, 2, 3)), (2, 1)),
    ("broadcast_to", lambda x: bg.broadcast_to(x, (2, 3, 3)), lambda a: np.broadcast_to(a, (2, 3, 3)), (3, 1)),
    ("squeeze", lambda x: x.squeeze(), lambda a: a.squeeze(), (1, 3, 1, 2)),
    ("squeeze_axis", lambda x: x.squeeze(axis=0), lambda a: a.squeeze(axis=0), (1, 3, 1)),
    ("unsqueeze", lambda x: x.unsqueeze(1), lambda a: np.expand_dims(a, 1), (2, 3)),
    ("slice", lambda x: x[1:, ::2], lambda a: a[1:, ::2], (3, 5)),
    ("slice_neg", lambda x: x[..., -1], lambda a: a[..., -1], (2, 3, 4)),
    ("newaxis", lambda x: x[None, :, 1], lambda a: a[None, :, 1], (3, 4)),
    ("int_array", lambda x: x[np.array([0, 2, 0, 0])], lambda a: a[np.array([0, 2, 0, 0])], (3, 2)),
    ("int_pairs", lambda x: x[np.array([0, 1, 1]), np.array([2, 0, 2])],
     lambda a: a[np.array([0, 1, 1]), np.array([2, 0, 2])], (2, 3)),
    ("softmax", lambda x: bg.softmax(x, axis=1), lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True), (3, 4)),
    ("log_softmax", lambda x: bg.log_softmax(x), lambda a: a - np.log(np.exp(a).sum(-1, keepdims=True)), (3, 4)),
    ("pad", lambda x: bg.pad(x, ((1, 0), (2, 1))), lambda a: np.pad(a, ((1, 0), (2, 1))), (2, 3)),
]


@pytest.mark.parametrize("name,fn,np_fn,shape", SHAPE_OPS, ids=[c[0] for c in SHAPE_OPS])
def test_shape_and_index_ops(backend, name, fn, np_fn, shape):
    check(backend, fn, np_fn, rand(shape, 3))


def test_repeated_integer_indices_accumulate(backend):
    x = t64(backend, [1.0, 2.0, 3.0])
    x[bg.tensor(np.array([0, 0, 2, 0]), device=backend)].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 0, 1])


def test_joining_ops(backend):
    a, b, c = rand((2, 3), 1), rand((1, 3), 2), rand((2, 3), 3)
    check(backend, lambda x, y: bg.concatenate([x, y], axis=0), lambda x, y: np.concatenate([x, y]), a, b)
    check(backend, lambda x, y: bg.stack([x, y], axis=1), lambda x, y: np.stack([x, y], axis=1), a, c)
    x = t64(backend, rand((2, 6), 4))
    parts = bg.split(x, 3, axis=1)
    assert [p.shape for p in parts] == [(2, 2)] * 3
    assert bg.gradcheck(lambda x: bg.split(x, [1, 4], axis=1)[1] * 2, [x])
    np.testing.assert_allclose(bg.split(x, [1, 4], axis=1)[2].numpy(), x.numpy()[:, 4:])


def test_softmax_is_stable_for_large_inputs(backend):
    x = bg.tensor([[1000.0, 1000.0, -1000.0]], device=backend)
    np.testing.assert_allclose(bg.softmax(x).numpy(), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(bg.log_softmax(x).numpy()[0, :2], [-np.log(2)] * 2, rtol=1e-6)
    assert np.isfinite(bg.logsumexp(x, axis=1).numpy()).all()


def test_float32_gradients_stay_float32(backend):
    x = bg.tensor(rand((3, 4), 5).astype(np.float32), device=backend, requires_grad=True)
    y = (bg.maximum(x, 0.1) * 2.0 + bg.clip(x, -1, 1) + x.max(axis=0).sum() + bg.leaky_relu(x)).sum()
    y.backward()
    assert (x * 2.0).dtype == np.float32 and y.dtype == np.float32
    assert x.grad.dtype == np.float32
