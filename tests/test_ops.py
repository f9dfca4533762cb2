"""Every differentiable op: forward values against NumPy, gradients against central finite
differences (``bg.gradcheck`` in float64), on shapes, axes, indices and broadcasting patterns
drawn by hypothesis, on every available backend (the ``backend`` fixture).

Then, over one table of every op: higher-order gradients (a gradcheck of the ``create_graph``
gradient), and float32 in, float32 out, float32 from every VJP.
"""
import math

import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, basic_indices, integer_array_indices, mutually_broadcastable_shapes

import backprop_gpu as bg
from backprop_gpu.tape.engine import graph_nodes
from backprop_gpu.tape.tensor import Tensor
from helpers import idx, x64

# Modest, reproducible example counts: the whole file stays well under a minute per backend.
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SEEDS = st.integers(0, 2**31 - 1)
R = (-2.0, 2.0)


def check(backend, fn, ref, *arrays, rtol=1e-10, atol=1e-12):
    """``fn`` on float64 tensors equals ``ref`` on the arrays, and its gradients pass gradcheck."""
    ts = [x64(backend, a) for a in arrays]
    out = fn(*ts)
    outs = out if isinstance(out, (list, tuple)) else [out]
    refs = ref(*arrays)
    refs = refs if isinstance(refs, (list, tuple)) else [refs]
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert isinstance(o, Tensor) and o.dtype == np.float64
        assert o.shape == np.shape(r), (o.shape, np.shape(r))
        np.testing.assert_allclose(o.numpy(), r, rtol=rtol, atol=atol)
        assert o.requires_grad
    assert bg.gradcheck(fn, ts)


# -- how inputs are drawn -------------------------------------------------------------------------
def uniform(*domains, kinks=()):
    """One array per shape, uniform in its domain, kept 0.05 away from ``kinks`` (where the
    derivative jumps and finite differences straddling it agree with no subgradient)."""
    def make(rng, shapes):
        out = []
        for shape, (lo, hi) in zip(shapes, domains):
            x = rng.uniform(lo, hi, size=shape)
            for k in kinks:
                x = np.where(np.abs(x - k) < 0.05, k + 0.1, x)
            out.append(x)
        return out
    return make


def away_from_zero(*domains):
    """Like ``uniform``, with the last input at least 0.4 away from 0 (a divisor)."""
    def make(rng, shapes):
        xs = uniform(*domains)(rng, shapes[:-1])
        d = rng.uniform(0.4, 2.0, size=shapes[-1]) * rng.choice([-1.0, 1.0], size=shapes[-1])
        return xs + [d]
    return make


def tie_free(rng, shapes):
    """maximum/minimum: two grids offset by 0.1, so no pair of elements ties."""
    a = np.round(rng.uniform(-2, 2, size=shapes[0]) * 5) / 5
    b = np.round(rng.uniform(-2, 2, size=shapes[1]) * 5) / 5 + 0.1
    return [a, b]


class Case:
    def __init__(self, fn, ref, make, linear=False):
        self.fn, self.ref, self.make, self.linear = fn, ref, make, linear
        self.arity = None


def _gelu_ref(x):
    return x * 0.5 * (1 + scipy.special.erf(x / np.sqrt(2)))


def _gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


U = uniform(R)
POS = uniform((0.2, 3.0))
BINARY = {
    "add": Case(lambda a, b: a + b, np.add, uniform(R, R), linear=True),
    "sub": Case(lambda a, b: a - b, np.subtract, uniform(R, R), linear=True),
    "mul": Case(lambda a, b: a * b, np.multiply, uniform(R, R)),
    "div": Case(lambda a, b: a / b, np.divide, away_from_zero(R, R)),
    "pow": Case(lambda a, b: a ** b, np.power, uniform((0.3, 2.0), R)),
    "maximum": Case(bg.maximum, np.maximum, tie_free, linear=True),  # piecewise linear
    "minimum": Case(bg.minimum, np.minimum, tie_free, linear=True),
    "add_method": Case(lambda a, b: a.add(b), np.add, uniform(R, R), linear=True),
    "div_method": Case(lambda a, b: a.div(b), np.divide, away_from_zero(R, R)),
}
UNARY = {
    "neg": Case(lambda x: -x, np.negative, U, linear=True),
    "exp": Case(bg.exp, np.exp, U),
    "log": Case(bg.log, np.log, POS),
    "sqrt": Case(bg.sqrt, np.sqrt, POS),
    "abs": Case(bg.abs, np.abs, uniform(R, kinks=(0,)), linear=True),
    "abs_builtin": Case(abs, np.abs, uniform(R, kinks=(0,)), linear=True),
    "clip": Case(lambda x: bg.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
                 uniform(R, kinks=(-0.5, 0.7)), linear=True),
    "clip_lo": Case(lambda x: x.clip(-0.5), lambda x: np.clip(x, -0.5, None), uniform(R, kinks=(-0.5,)),
                    linear=True),
    "clamp_hi": Case(lambda x: x.clamp(a_max=0.7), lambda x: np.clip(x, None, 0.7), uniform(R, kinks=(0.7,)),
                     linear=True),
    "relu": Case(bg.relu, lambda x: np.maximum(x, 0), uniform(R, kinks=(0,)), linear=True),
    "leaky_relu": Case(lambda x: bg.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x),
                       uniform(R, kinks=(0,)), linear=True),
    "sigmoid": Case(bg.sigmoid, scipy.special.expit, U),
    "tanh": Case(bg.tanh, np.tanh, U),
    "softplus": Case(bg.softplus, lambda x: np.log1p(np.exp(x)), U),
    "gelu": Case(bg.gelu, _gelu_ref, U),
    "gelu_tanh": Case(lambda x: bg.gelu(x, approximate="tanh"), _gelu_tanh_ref, U),
    "erf": Case(bg.erf, scipy.special.erf, U),
    "log1p": Case(bg.log1p, np.log1p, POS),
    "sin": Case(bg.sin, np.sin, U),
    "cos": Case(bg.cos, np.cos, U),
    "expm1": Case(bg.expm1, np.expm1, U),
    "rsqrt": Case(bg.rsqrt, lambda x: 1 / np.sqrt(x), POS),
    "reciprocal": Case(bg.reciprocal, np.reciprocal, POS),
    "floor": Case(bg.floor, np.floor, uniform(R, kinks=(-1, 0, 1)), linear=True),
    "ceil": Case(bg.ceil, np.ceil, uniform(R, kinks=(-1, 0, 1)), linear=True),
    "round": Case(bg.round, np.round, uniform(R, kinks=(-1.5, -0.5, 0.5, 1.5)), linear=True),
    "square": Case(lambda x: x * x, np.square, U),  # one tensor in both slots: gradients add up
    "pow_2": Case(lambda x: x ** 2, np.square, U),
    "pow_3": Case(lambda x: x.pow(3), lambda x: x ** 3, U),
    "pow_0": Case(lambda x: x ** 0, lambda x: x ** 0, U, linear=True),
    "pow_half": Case(lambda x: x ** 0.5, np.sqrt, POS),
    "pow_neg": Case(lambda x: x ** -1.5, lambda x: x ** -1.5, POS),
    "pow_np_scalar": Case(lambda x: x ** np.float64(2.5), lambda x: x ** 2.5, POS),
    "rpow": Case(lambda x: 2.0 ** x, lambda x: 2.0 ** x, U),
    "radd": Case(lambda x: 2.5 + x, lambda x: 2.5 + x, U, linear=True),
    "rsub": Case(lambda x: 2.5 - x, lambda x: 2.5 - x, U, linear=True),
    "rmul": Case(lambda x: 3 * x, lambda x: 3 * x, U, linear=True),
    "rdiv": Case(lambda x: 2.0 / x, lambda x: 2.0 / x, away_from_zero()),
    "div_scalar": Case(lambda x: x / 4, lambda x: x / 4, U, linear=True),
    "np_scalar_mul": Case(lambda x: np.float64(1.5) * x, lambda x: 1.5 * x, U, linear=True),
}
ELEMENTWISE = {**BINARY, **UNARY}
for _name, _case in ELEMENTWISE.items():
    _case.arity = 2 if _name in BINARY else 1


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@SETTINGS
@given(data=st.data(), seed=SEEDS)
def test_elementwise_ops(backend, name, data, seed):
    """Unary ops on any shape (0-d included); binary ops on every broadcasting pattern."""
    case = ELEMENTWISE[name]
    shapes = data.draw(mutually_broadcastable_shapes(num_shapes=case.arity, min_dims=0, max_dims=3, max_side=3))
    arrays = case.make(np.random.default_rng(seed), shapes.input_shapes)
    check(backend, case.fn, case.ref, *arrays)


@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=SEEDS)
def test_where(backend, shapes, seed):
    rng = np.random.default_rng(seed)
    sc, sa, sb = shapes.input_shapes
    cond = rng.random(sc) < 0.5
    a, b = rng.uniform(-2, 2, sa), rng.uniform(-2, 2, sb)
    c = bg.tensor(cond, device=backend)
    check(backend, lambda a, b: bg.where(c, a, b), lambda a, b: np.where(cond, a, b), a, b)
    check(backend, lambda a: bg.where(c, a, 0.5), lambda a: np.where(cond, a, 0.5), a)
    check(backend, lambda b: bg.where(c, -1.0, b), lambda b: np.where(cond, -1.0, b), b)


def test_maximum_minimum_ties_split_the_gradient(backend):
    a, b = x64(backend, [1.0, 2.0, 3.0]), x64(backend, [1.0, 0.0, 3.0])
    bg.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 0.0, 0.5])
    a.grad = b.grad = None
    bg.minimum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 1.0, 0.5])


def test_kinks_use_pytorchs_subgradients(backend):
    x = x64(backend, [-1.0, 0.0, 2.0])
    (bg.relu(x) + bg.abs(x) + bg.clip(x, 0.0, 2.0)).sum().backward()
    # relu'(0) = 0, abs'(0) = 0 (sign), clip passes the gradient on its closed interval [lo, hi]
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 1.0, 3.0])


def test_pow_tensor_exponent_at_nonpositive_base(backend):
    """d(a**b)/db = a**b log a; where a <= 0 it is taken as 0 rather than NaN."""
    a, b = x64(backend, [0.0, -2.0, 3.0]), x64(backend, [2.0, 2.0, 2.0])
    (a ** b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.0, 9 * np.log(3)])
    np.testing.assert_allclose(a.grad.numpy(), [0.0, -4.0, 6.0])


# -- reductions -----------------------------------------------------------------------------------
@st.composite
def shape_axis_keepdims(draw, min_dims=1):
    shape = draw(array_shapes(min_dims=min_dims, max_dims=3, max_side=4))
    nd = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                          st.lists(st.integers(-nd, nd - 1), min_size=1, max_size=nd,
                                   unique_by=lambda a: a % nd).map(tuple)))
    return shape, axis, draw(st.booleans())


def _n_reduced(shape, axis):
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
    return int(np.prod([shape[a] for a in axes]))


REDUCTIONS = {
    "sum": (bg.sum, np.sum),
    "mean": (bg.mean, np.mean),
    "amax": (bg.amax, np.max),
    "amin": (bg.amin, np.min),
    "var": (bg.var, lambda x, axis, keepdims: np.var(x, axis=axis, keepdims=keepdims, ddof=1)),
    "std": (bg.std, lambda x, axis, keepdims: np.std(x, axis=axis, keepdims=keepdims, ddof=1)),
    "var_correction0": (lambda x, axis, keepdims: bg.var(x, axis=axis, keepdims=keepdims, correction=0), np.var),
    "std_correction0": (lambda x, axis, keepdims: bg.std(x, axis=axis, keepdims=keepdims, correction=0), np.std),
    "logsumexp": (bg.logsumexp, scipy.special.logsumexp),
    "sum_method": (lambda x, axis, keepdims: x.sum(axis, keepdims), np.sum),
    "amax_method": (lambda x, axis, keepdims: x.amax(axis=axis, keepdims=keepdims), np.max),
    "sum_dim": (lambda x, axis, keepdims: x.sum(dim=axis, keepdim=keepdims), np.sum),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@SETTINGS
@given(case=shape_axis_keepdims(), seed=SEEDS)
def test_reductions(backend, name, case, seed):
    shape, axis, keepdims = case
    fn, ref = REDUCTIONS[name]
    x = np.random.default_rng(seed).uniform(-2, 2, shape)  # continuous values: max/min never tie
    correction = 0 if "correction0" in name else 1
    n = _n_reduced(shape, axis)
    if name.startswith(("var", "std")) and n <= correction:
        with pytest.raises(ValueError, match="correction"):
            fn(x64(backend, x), axis=axis, keepdims=keepdims)
        return
    check(backend, lambda t: fn(t, axis=axis, keepdims=keepdims), lambda a: ref(a, axis=axis, keepdims=keepdims),
          x, rtol=1e-9)


def test_reductions_of_a_0d_tensor(backend):
    x = x64(backend, 1.5)
    for f in (bg.sum, bg.mean, bg.max, bg.min, bg.logsumexp):
        check(backend, f, lambda a: a, np.float64(1.5))
    assert bg.sum(x).shape == ()


def test_max_min_ties_share_the_gradient(backend):
    x = x64(backend, [[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 5.0]])
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0, 0, 0], [0, 0, 0, 1]])
    x.grad = None
    x.amax(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5, 0], [0, 0, 0, 1]])
    x.grad = None
    x.amin(dim=1, keepdim=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]])


def test_max_along_a_dim_is_values_and_indices_as_in_pytorch(backend):
    """``_, pred = out.max(1)`` is PyTorch's argmax idiom: with NumPy's max it unpacked values."""
    x = x64(backend, [[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 5.0]])
    values, pred = x.max(1)
    assert isinstance(x.max(1), bg.return_types.max)
    np.testing.assert_array_equal(pred.numpy(), [1, 3])
    assert pred.dtype == np.int64 and not pred.requires_grad
    np.testing.assert_array_equal(values.numpy(), [3, 5])
    values.sum().backward()  # all of the gradient to the first maximum, as PyTorch does along a dim
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0, 0], [0, 0, 0, 1]])
    r = bg.min(x, dim=0, keepdim=True)
    assert r.values.shape == r.indices.shape == (1, 4)
    np.testing.assert_array_equal(r.indices.numpy(), [[1, 1, 1, 0]])
    np.testing.assert_array_equal(x.max(axis=-1, keepdims=True).indices.numpy(), [[1], [3]])
    np.testing.assert_array_equal(x.max(x64(backend, 2.5, grad=False)).numpy(), [[2.5, 3, 3, 2.5], [2.5] * 3 + [5]])
    v, i = x64(backend, 4.0).max(0)
    assert v.item() == 4.0 and i.item() == 0 and i.shape == ()
    with pytest.raises(TypeError, match="one int dimension"):
        x.max(dim=(0, 1))
    with pytest.raises(TypeError, match="both dim=1 and axis=1"):
        x.max(dim=1, axis=1)
    with pytest.raises(IndexError, match="out of range"):
        x.max(2)
    with pytest.raises(IndexError, match="size 0"):
        bg.zeros(2, 0, device=backend).max(1)


def test_max_min_along_a_dim_match_torch(backend):
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(5).integers(0, 3, (4, 5, 3)).astype(np.float64)  # many ties
    for name in ("max", "min"):
        for dim, keep in ((0, False), (1, True), (-1, False)):
            x, tx = x64(backend, a), torch.tensor(a, requires_grad=True)
            ours, theirs = getattr(x, name)(dim, keep), getattr(tx, name)(dim, keep)
            np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
            w = np.random.default_rng(dim + 2).standard_normal(theirs.values.shape)
            (ours.values * x64(backend, w, grad=False)).sum().backward()
            (theirs.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_std_of_a_constant_has_zero_gradient_as_in_pytorch(backend):
    x = x64(backend, [[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    x.std(dim=1).sum().backward()
    g = x.grad.numpy()
    np.testing.assert_array_equal(g[0], [0, 0, 0])  # was NaN: 0 / sqrt(0)
    assert np.all(np.isfinite(g[1])) and np.all(g[1] != 0)
    y = x64(backend, [3.0, 3.0])
    (gy,) = bg.grad(y.std(), y, create_graph=True)
    np.testing.assert_array_equal(gy.numpy(), [0, 0])
    gy.sum().backward()
    assert np.all(np.isfinite(y.grad.numpy()))


@SETTINGS
@given(case=shape_axis_keepdims(), seed=SEEDS)
def test_argmax_argmin_match_numpy_and_have_no_gradient(backend, case, seed):
    shape, axis, keepdims = case
    if isinstance(axis, tuple):
        axis = axis[0]  # NumPy takes one axis
    x = np.random.default_rng(seed).uniform(-2, 2, shape)
    t = x64(backend, x)
    for f, ref in ((bg.argmax, np.argmax), (lambda t, **kw: t.argmin(**kw), np.argmin)):
        r = f(t, axis=axis, keepdims=keepdims)
        np.testing.assert_array_equal(r.numpy(), ref(x, axis=axis, keepdims=keepdims))
        assert r.dtype == np.int64 and not r.requires_grad and r.grad_fn is None


# -- matmul ---------------------------------------------------------------------------------------
@SETTINGS
@given(shapes=mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=3), seed=SEEDS)
def test_matmul(backend, shapes, seed):
    """Batched matmul with broadcast batch dims and 1-D operands on either side (NumPy's rules)."""
    rng = np.random.default_rng(seed)
    a, b = (rng.uniform(-2, 2, s) for s in shapes.input_shapes)
    check(backend, lambda x, y: x @ y, np.matmul, a, b)
    check(backend, bg.matmul, np.matmul, a, b)


def test_matmul_with_a_constant_operand(backend):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2))
    check(backend, lambda x: x @ w, lambda x: x @ w, rng.standard_normal((4, 3)))
    check(backend, lambda x: w.T @ x, lambda x: w.T @ x, rng.standard_normal((3, 2)))


# -- shape ops ------------------------------------------------------------------------------------
SHAPES = array_shapes(min_dims=0, max_dims=3, max_side=4)


def _vals(shape, seed):
    return np.random.default_rng(seed).uniform(-2, 2, shape)


@st.composite
def reshape_targets(draw):
    shape = draw(array_shapes(min_dims=0, max_dims=3, max_side=4))
    rest, target = math.prod(shape), []
    for _ in range(draw(st.integers(0, 3))):
        d = draw(st.sampled_from([d for d in range(1, rest + 1) if rest % d == 0]))
        target.append(d)
        rest //= d
    target = list(draw(st.permutations(target + [rest])))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@SETTINGS
@given(case=reshape_targets(), seed=SEEDS)
def test_reshape(backend, case, seed):
    shape, target = case
    x = _vals(shape, seed)
    check(backend, lambda t: t.reshape(target), lambda a: a.reshape(target), x)
    check(backend, lambda t: t.reshape(*target) if target else t.reshape(()), lambda a: a.reshape(target), x)
    check(backend, lambda t: t.view(target), lambda a: a.reshape(target), x)


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=3), data=st.data(), seed=SEEDS)
def test_flatten(backend, shape, data, seed):
    nd = len(shape)
    start = data.draw(st.integers(0, nd - 1))
    end = data.draw(st.integers(start, nd - 1))
    x = _vals(shape, seed)
    ref = x.reshape(shape[:start] + (-1,) + shape[end + 1:])
    check(backend, lambda t: bg.flatten(t, start, end - nd), lambda a: ref, x)
    check(backend, lambda t: t.flatten(), lambda a: a.reshape(-1), x)


@SETTINGS
@given(shape=SHAPES, data=st.data(), seed=SEEDS)
def test_transpose_and_permute(backend, shape, data, seed):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    neg = tuple(p - len(shape) for p in perm)  # negative axes name the same permutation
    x = _vals(shape, seed)
    check(backend, lambda t: bg.transpose(t, perm), lambda a: np.transpose(a, perm), x)
    check(backend, lambda t: t.permute(*neg) if neg else t.permute(()), lambda a: np.transpose(a, perm), x)
    check(backend, lambda t: t.T, lambda a: a.T, x)
    if len(shape) >= 2:
        i, j = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(-len(shape), -1))
        check(backend, lambda t: bg.swapaxes(t, i, j), lambda a: np.swapaxes(a, i, j), x)
        # two axes unpacked: swapped, as torch.transpose(x, dim0, dim1)
        check(backend, lambda t: t.transpose(i, j), lambda a: np.swapaxes(a, i, j), x)


@st.composite
def expand_case(draw):
    target = draw(array_shapes(min_dims=0, max_dims=3, max_side=3))
    k = draw(st.integers(0, len(target)))
    src = tuple(1 if draw(st.booleans()) else n for n in target[len(target) - k:])
    return src, target


@SETTINGS
@given(case=expand_case(), data=st.data(), seed=SEEDS)
def test_broadcast_to_and_expand(backend, case, data, seed):
    src, target = case
    x = _vals(src, seed)
    check(backend, lambda t: bg.broadcast_to(t, target), lambda a: np.broadcast_to(a, target), x)
    lead = len(target) - len(src)
    # PyTorch's -1: keep an existing axis
    spec = tuple(-1 if i >= lead and n == src[i - lead] and data.draw(st.booleans()) else n
                 for i, n in enumerate(target))
    check(backend, lambda t: t.expand(*spec) if spec else t.expand(()), lambda a: np.broadcast_to(a, target), x)


@SETTINGS
@given(shape=array_shapes(min_dims=0, max_dims=4, max_side=2), data=st.data(), seed=SEEDS)
def test_squeeze_and_unsqueeze(backend, shape, data, seed):
    x = _vals(shape, seed)
    check(backend, lambda t: t.squeeze(), np.squeeze, x)
    ones = [i for i, n in enumerate(shape) if n == 1]
    if ones:
        ax = data.draw(st.sampled_from(ones))
        check(backend, lambda t: bg.squeeze(t, axis=ax - len(shape)), lambda a: np.squeeze(a, axis=ax), x)
    pos = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(backend, lambda t: t.unsqueeze(pos), lambda a: np.expand_dims(a, pos), x)
    check(backend, lambda t: bg.expand_dims(t, (0, -1)), lambda a: np.expand_dims(a, (0, -1)), x)


# -- indexing -------------------------------------------------------------------------------------
NONEMPTY = array_shapes(min_dims=1, max_dims=3, max_side=4)


@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_getitem_basic_indexing(backend, shape, data, seed):
    """Slices (negative steps, empty results), integers, None and Ellipsis."""
    key = data.draw(basic_indices(shape, allow_newaxis=True))
    check(backend, lambda t: t[key], lambda a: np.asarray(a[key]), _vals(shape, seed))


@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_getitem_integer_arrays(backend, shape, data, seed):
    """Integer-array indices with repeats: the gradient of a repeated element accumulates."""
    key = data.draw(integer_array_indices(shape, result_shape=array_shapes(min_dims=1, max_dims=2, max_side=5)))
    check(backend, lambda t: t[tuple(idx(backend, k) for k in key)], lambda a: a[key], _vals(shape, seed))
    # one index array on an inner axis, slices elsewhere
    ax = data.draw(st.integers(0, len(shape) - 1))
    rows = np.asarray(data.draw(st.lists(st.integers(-shape[ax], shape[ax] - 1), min_size=1, max_size=6)))
    lead = (slice(None),) * ax
    check(backend, lambda t: t[lead + (idx(backend, rows),)], lambda a: a[lead + (rows,)], _vals(shape, seed))


def test_repeated_integer_indices_accumulate(backend):
    x = x64(backend, [1.0, 2.0, 3.0])
    x[idx(backend, [0, 0, 2, 0])].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 0, 1])
    m = x64(backend, np.zeros((2, 3)))
    (m[idx(backend, [1, 1]), idx(backend, [2, 2])] * x64(backend, [2.0, 5.0], grad=False)).sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), [[0, 0, 0], [0, 0, 7]])
    x.grad = None
    x[[2, 2]].sum().backward()  # a Python list is an index array too
    np.testing.assert_allclose(x.grad.numpy(), [0, 0, 2])


def test_getitem_boolean_mask(backend):
    mask = np.array([[True, False, True], [False, False, True]])
    check(backend, lambda t: t[bg.tensor(mask, device=backend)], lambda a: a[mask], _vals((2, 3), 0))
    x = x64(backend, np.ones((2, 3)))
    (x[x > 0] * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 2.0))


# -- joining --------------------------------------------------------------------------------------
@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_concatenate(backend, shape, data, seed):
    ax = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-2, 2, shape[:ax % len(shape)] + (n,) + shape[ax % len(shape) + 1:]) for n in sizes]
    check(backend, lambda *ts: bg.concatenate(ts, axis=ax), lambda *a: np.concatenate(a, axis=ax), *arrays)
    check(backend, lambda *ts: bg.cat(list(ts), ax), lambda *a: np.concatenate(a, axis=ax), *arrays)


@SETTINGS
@given(shape=SHAPES, data=st.data(), seed=SEEDS)
def test_stack(backend, shape, data, seed):
    ax = data.draw(st.integers(-len(shape) - 1, len(shape)))
    k = data.draw(st.integers(1, 3))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-2, 2, shape) for _ in range(k)]
    check(backend, lambda *ts: bg.stack(ts, axis=ax), lambda *a: np.stack(a, axis=ax), *arrays)


@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_split(backend, shape, data, seed):
    """torch.split: an int is each piece's size (the last one smaller), a list the sizes."""
    ax = data.draw(st.integers(0, len(shape) - 1))
    n = shape[ax]
    x = _vals(shape, seed)
    size = data.draw(st.integers(1, n))
    at = list(range(size, n, size))  # where the pieces of that size start
    check(backend, lambda t: bg.split(t, size, dim=ax), lambda a: np.split(a, at, axis=ax), x)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    sizes = np.diff([0, *cuts, n]).tolist()
    check(backend, lambda t: bg.split(t, sizes, dim=ax - len(shape)), lambda a: np.split(a, cuts, axis=ax), x)
    # one part used, or parts used twice: gradients land in the right places and add up
    check(backend, lambda t: bg.split(t, size, axis=ax)[-1] * 3, lambda a: np.split(a, at, axis=ax)[-1] * 3, x)
    check(backend, lambda t: sum(p * p for p in bg.split(t, size, axis=ax)),
          lambda a: sum(p * p for p in np.split(a, at, axis=ax)), x)


@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_pad(backend, shape, data, seed):
    widths = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    value = data.draw(st.sampled_from([0.0, -1.5]))
    x = _vals(shape, seed)
    check(backend, lambda t: bg.pad(t, widths, value=value), lambda a: np.pad(a, widths, constant_values=value), x)
    check(backend, lambda t: bg.pad(t, 1), lambda a: np.pad(a, 1), x)
    check(backend, lambda t: bg.pad(t, (2, 0)), lambda a: np.pad(a, (2, 0)), x)


# -- softmax --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@SETTINGS
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_softmax_and_log_softmax(backend, name, shape, data, seed):
    ax = data.draw(st.integers(-len(shape), len(shape) - 1))
    shift = data.draw(st.sampled_from([0.0, 1000.0, -1000.0]))  # exp(1000) overflows unless shifted
    x = np.random.default_rng(seed).uniform(-3, 3, shape) + shift
    fn, ref = {"softmax": (bg.softmax, scipy.special.softmax), "log_softmax": (bg.log_softmax, scipy.special.log_softmax)}[name]
    check(backend, lambda t: fn(t, axis=ax), lambda a: ref(a, axis=ax), x, rtol=1e-9, atol=1e-9)
    check(backend, lambda t: getattr(t, name)(ax), lambda a: ref(a, axis=ax), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_family_is_stable_for_large_inputs(backend, dtype):
    x = bg.tensor(np.array([[1000.0, 1000.0, -1000.0], [-1000.0, 0.0, 1000.0]], dtype=dtype), device=backend,
                  requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # not even an intermediate overflows
        s, ls, lse = bg.softmax(x), bg.log_softmax(x), bg.logsumexp(x, axis=1)
        (s[:, 0].sum() + ls[:, 1].sum() + lse.sum()).backward()
    np.testing.assert_allclose(s.numpy(), [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(ls.numpy()[0, :2], [-np.log(2)] * 2, rtol=1e-6)
    np.testing.assert_allclose(ls.numpy()[1], [-2000.0, -1000.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(lse.numpy(), [1000 + np.log(2), 1000.0], rtol=1e-6)
    g = x.grad.numpy()
    assert np.isfinite(g).all() and g.dtype == dtype
    # d/dx of softmax[:,0] + log_softmax[:,1] + logsumexp, row 0: s=(.5,.5,0)
    # d/dx of softmax[:, 0] + log_softmax[:, 1] + logsumexp: p0 (e0 - p) + (e1 - p) + p per row
    np.testing.assert_allclose(g, [[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]], atol=1e-6)


def test_logsumexp_of_infinities(backend):
    x = x64(backend, [[-np.inf, -np.inf], [0.0, -np.inf], [np.inf, 1.0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        y = bg.logsumexp(x, axis=1)
        np.testing.assert_array_equal(y.numpy(), scipy.special.logsumexp(x.numpy(), axis=1))  # -inf, 0, inf
        y[1].backward()  # (rows 0 and 2 get NaN, 0 * inf, as in PyTorch)
    np.testing.assert_array_equal(x.grad.numpy()[1], [1.0, 0.0])


# -- one table of every op: higher-order gradients and float32 ---------------------------------------
def _fixed_elementwise():
    out = {}
    for name, case in ELEMENTWISE.items():
        shapes = [(2, 3), (3,)] if case.arity == 2 else [(2, 3)]  # binary ops broadcast here
        out[name] = (case.fn, case.make, shapes, case.linear)
    return out


def _uniform_each(rng, shapes):
    return [rng.uniform(-2, 2, s) for s in shapes]


def _c(fn, shapes, linear=False):
    return fn, _uniform_each, shapes, linear


_WHERE_COND = np.array([[True], [False]])
ALL_OPS = {
    **_fixed_elementwise(),
    "where": _c(lambda a, b: bg.where(bg.tensor(_WHERE_COND, device=a.backend), a, b), [(2, 3), (3,)], True),
    "sum": _c(lambda x: x.sum(axis=1), [(2, 3)], True),
    "mean": _c(lambda x: x.mean(axis=(0, 2), keepdims=True), [(2, 3, 2)], True),
    "max": _c(lambda x: x.max(axis=0).values, [(3, 2)], True),
    "amax": _c(lambda x: x.amax(axis=0), [(3, 2)], True),
    "min": _c(lambda x: bg.min(x), [(3, 2)], True),
    "var": _c(lambda x: x.var(axis=1), [(2, 3)]),
    "std": _c(lambda x: x.std(axis=-1, keepdims=True), [(2, 3)]),
    "logsumexp": _c(lambda x: bg.logsumexp(x, axis=1), [(2, 3)]),
    "matmul": _c(lambda a, b: a @ b, [(2, 3), (3, 2)]),
    "matmul_batched": _c(lambda a, b: a @ b, [(2, 1, 2, 3), (2, 3, 2)]),
    "matmul_vec_mat": _c(lambda a, b: a @ b, [(3,), (2, 3, 2)]),
    "matmul_mat_vec": _c(lambda a, b: a @ b, [(2, 2, 3), (3,)]),
    "matmul_vec_vec": _c(lambda a, b: a @ b, [(3,), (3,)]),
    "reshape": _c(lambda x: x.reshape(3, -1), [(2, 3)], True),
    "flatten": _c(lambda x: x.flatten(), [(2, 3)], True),
    "transpose": _c(lambda x: x.permute(2, 0, 1), [(2, 3, 2)], True),
    "T": _c(lambda x: x.T, [(2, 3)], True),
    "expand": _c(lambda x: x.expand(2, -1, 3), [(3, 1)], True),
    "squeeze": _c(lambda x: x.squeeze(), [(1, 3, 1)], True),
    "unsqueeze": _c(lambda x: x.unsqueeze(1), [(2, 3)], True),
    "getitem_basic": _c(lambda x: x[1:, ::-2, None], [(3, 4)], True),
    "getitem_element": _c(lambda x: x[1, 2], [(3, 4)], True),
    "getitem_int_array": _c(lambda x: x[idx(x.backend, [0, 2, 0]), 1:], [(3, 4)], True),
    "concatenate": _c(lambda a, b: bg.concatenate([a, b], axis=1), [(2, 3), (2, 1)], True),
    "stack": _c(lambda a, b: bg.stack([a, b], axis=-1), [(2, 3), (2, 3)], True),
    "split": _c(lambda x: bg.split(x, [1, 2], dim=1)[1], [(2, 3)], True),
    "pad": _c(lambda x: bg.pad(x, ((1, 0), (0, 2)), value=0.5), [(2, 3)], True),
    "softmax": _c(lambda x: bg.softmax(x, axis=0), [(2, 3)]),
    "log_softmax": _c(lambda x: bg.log_softmax(x), [(2, 3)]),
    "astype": _c(lambda x: (x.double() * 2).float(), [(2, 3)], True),
    "scatter": _c(lambda x, s: bg.scatter(x, 1, idx(x.backend, [[2, 0], [1, 2]]), s), [(2, 3), (2, 2)], True),
    "scatter_add": _c(lambda x, s: x.scatter_add(0, idx(x.backend, [[1, 1, 0], [1, 0, 0]]), s), [(2, 3), (2, 3)],
                      True),
    "index_add": _c(lambda x, s: x.index_add(1, idx(x.backend, [2, 0, 2]), s, alpha=0.5), [(2, 3), (2, 3)], True),
    "prod": _c(lambda x: x.prod(1), [(2, 3)]),
    "cumprod": _c(lambda x: x.cumprod(0), [(3, 2)]),
    "median": _c(lambda x: x.median(1).values, [(2, 4)], True),
    "einsum": _c(lambda a, b: bg.einsum("bij,jk->bk", a, b), [(2, 2, 3), (3, 2)]),
    "einsum_diagonal": _c(lambda a, b: bg.einsum("iij,j->ij", a, b), [(2, 2, 3), (3,)]),
    # ops feeding each other, so create_graph gradients flow through several VJPs
    "mlp": _c(lambda x, w: bg.log_softmax(bg.gelu(x @ w) * 2.0 - 1, axis=1).sum(axis=0), [(2, 3), (3, 4)]),
}


def _inputs(backend, name, dtype, seed=0):
    fn, make, shapes, linear = ALL_OPS[name]
    arrays = make(np.random.default_rng(seed), shapes)
    ts = [bg.tensor(np.asarray(a, dtype=dtype), device=backend, requires_grad=True) for a in arrays]
    return fn, ts, linear


@pytest.mark.parametrize("name", list(ALL_OPS))
def test_second_order_gradients(backend, name):
    """The create_graph gradient equals the plain one and is itself differentiable: gradcheck of
    x -> d<w, f(x)>/dx checks every op's VJP as recorded on the tape (second derivatives)."""
    fn, xs, linear = _inputs(backend, name, np.float64)
    w = bg.tensor(np.random.default_rng(1).standard_normal(fn(*xs).shape), device=backend)

    def gradient(*xs):
        return bg.grad((fn(*xs) * w).sum(), xs, create_graph=True)

    plain = bg.grad((fn(*xs) * w).sum(), xs)
    recorded = gradient(*xs)
    for p, r in zip(plain, recorded):
        np.testing.assert_allclose(r.numpy(), p.numpy(), rtol=1e-12, atol=1e-12)
    live = [i for i, r in enumerate(recorded) if r.requires_grad]
    if linear:
        return  # constant gradient (possibly still recorded, e.g. through a mask)
    assert live, f"{name}: the create_graph gradient was not recorded"
    assert bg.gradcheck(lambda *xs: [gradient(*xs)[i] for i in live], xs)


def _run_vjps(out, create_graph):
    """Run each recorded node's VJP on a cotangent of its output's dtype; yield (op, input dtype,
    gradient dtype)."""
    for node in graph_nodes(out._node):
        out_arr = node.op.forward(node.backend.F, *[t.array for t in node.inputs], **node.kwargs)
        g = node.backend.xp.ones(out_arr.shape, dtype=out_arr.dtype)
        xs, node_out = node.vjp_args(Tensor, create_graph)
        if create_graph:
            with bg.enable_grad():
                gs = node.op.call_vjp(bg.ops, Tensor._make(g, node.backend), node_out, xs, node.needs, node.kwargs)
        else:
            gs = node.op.call_vjp(node.backend.F, g, node_out, xs, node.needs, node.kwargs)
        for t, gi in zip(node.inputs, gs):
            if gi is not None and t.requires_grad:
                yield node.op.name, t.dtype, gi.dtype


@pytest.mark.parametrize("name", list(ALL_OPS))
def test_float32_in_float32_out(backend, name):
    """float32 inputs (with Python scalars in the expressions) give float32 outputs, and no VJP
    promotes to float64 - checked on each VJP's own result, before the engine casts anything."""
    fn, xs, _ = _inputs(backend, name, np.float32)
    out = fn(*xs)
    assert out.dtype == np.float32
    if name != "astype":  # which goes through float64 on purpose
        for node in graph_nodes(out._node):
            out_arr = node.op.forward(node.backend.F, *[t.array for t in node.inputs], **node.kwargs)
            assert out_arr.dtype == np.float32, node.op.name
    for create_graph in (False, True):
        for op, in_dtype, dt in _run_vjps(out, create_graph):
            assert dt == in_dtype, f"{op} VJP (create_graph={create_graph}) gave {dt} for a {in_dtype} input"
    (out * out).sum().backward()
    assert all(x.grad.dtype == np.float32 for x in xs)
