"""Bad input gets a clear error naming the shapes, dtypes or op involved."""
import re

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu.autograd import GraphFreedError

BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "maximum": bg.maximum, "minimum": bg.minimum,
    "greater": lambda a, b: a > b, "equal": lambda a, b: a == b,
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_shape_mismatch_names_both_shapes(backend, name):
    a = bg.zeros(2, 3, device=backend, requires_grad=True)
    b = bg.ones(4, device=backend)
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4,\) cannot be broadcast together"):
        BINARY[name](a, b)
    with pytest.raises(ValueError, match=r"shapes \(4,\) and \(2, 3\)"):
        BINARY[name](b, a)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        BINARY[name](a, [1.0, 2.0, 3.0, 4.0])


def test_where_shape_mismatch(backend):
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        bg.where(bg.tensor([True, False], device=backend), bg.zeros(2, device=backend), bg.zeros(3, device=backend))


def test_matmul_shape_errors(backend):
    a = bg.zeros(2, 3, device=backend)
    with pytest.raises(ValueError, match=r"matmul shape mismatch: \(2, 3\) @ \(2, 3\) \(inner dimensions 3 != 2\)"):
        a @ a
    with pytest.raises(ValueError, match=r"matmul shape mismatch: \(3,\) @ \(2, 3\)"):
        bg.zeros(3, device=backend) @ a
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) @ \(5, 4, 2\) \(batch dimensions \(2,\) and \(5,\)"):
        bg.zeros(2, 3, 4, device=backend) @ bg.zeros(5, 4, 2, device=backend)
    with pytest.raises(ValueError, match=r"at least 1-D operands, got shapes \(\) and \(2, 3\)"):
        bg.tensor(2.0, device=backend) @ a


def test_shape_op_errors(backend):
    a = bg.zeros(2, 3, device=backend)
    cases = [
        (lambda: a.reshape(4, 2), ValueError, r"cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"),
        (lambda: a.reshape(-1, -1), ValueError, r"shape \(2, 3\)"),
        (lambda: a.squeeze(0), ValueError, r"cannot squeeze axis 0 of shape \(2, 3\)"),
        (lambda: a.expand(4, 3), ValueError, r"cannot broadcast a tensor of shape \(2, 3\) to \(4, 3\)"),
        (lambda: a.expand(-1, 2, 3), ValueError, r"cannot expand a tensor of shape \(2, 3\) to \(-1, 2, 3\)"),
        (lambda: bg.transpose(a, (0, 0)), ValueError, r"not a permutation of the axes of a tensor of shape \(2, 3\)"),
        (lambda: a.permute(0, 1, 2), ValueError, r"not a permutation"),
        (lambda: bg.concatenate([a, bg.zeros(3, 3, device=backend)], axis=1), ValueError,
         r"shapes \[\(2, 3\), \(3, 3\)\] differ off that axis"),
        (lambda: bg.stack([a, bg.zeros(3, 2, device=backend)]), ValueError, r"equal shapes, got \[\(2, 3\), \(3, 2\)\]"),
        (lambda: bg.concatenate([]), ValueError, "at least one tensor"),
        (lambda: bg.split(a, [1, 1], dim=1), ValueError, r"sizes \[1, 1\] must be non-negative and add up to 3"),
        (lambda: bg.split(a, 0, dim=1), ValueError, "split_size must be a positive integer, got 0"),
        (lambda: bg.pad(a, ((1, 1),)), ValueError, r"does not fit a tensor of shape \(2, 3\)"),
        (lambda: bg.pad(a, -1), ValueError, "pad_width"),
        (lambda: a.sum(axis=2), IndexError, r"dimension 2 is out of range for a tensor with 2 dimension\(s\)"),
        (lambda: a.mean(axis=(0, -3)), IndexError, "dimension -3 is out of range"),
        (lambda: bg.softmax(a, axis=5), IndexError, "dimension 5"),
        (lambda: a[2], IndexError, r"invalid for a tensor of shape \(2, 3\)"),
        (lambda: a[:, bg.tensor([0, 3], device=backend)], IndexError, r"invalid for a tensor of shape \(2, 3\)"),
        (lambda: a[0, 0, 0], IndexError, r"shape \(2, 3\)"),
        (lambda: bg.max(bg.zeros(0, device=backend)), ValueError, r"max of an empty tensor of shape \(0,\)"),
        (lambda: bg.var(bg.zeros(1, device=backend)), ValueError, "var over 1 element.*correction=1"),
        (lambda: bg.gelu(a, approximate="fast"), ValueError, "'none' or 'tanh'"),
        (lambda: bg.clip(a), ValueError, "a_min or a_max"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()


def test_unsupported_dtypes(backend):
    with pytest.raises(TypeError, match="only floating-point tensors can require grad, got dtype int64"):
        bg.tensor([1, 2], device=backend, requires_grad=True)
    with pytest.raises(TypeError, match="got dtype int32"):
        bg.zeros(2, dtype="int32", device=backend, requires_grad=True)
    with pytest.raises(TypeError, match="got dtype bool"):
        bg.tensor([True], device=backend).requires_grad_()
    with pytest.raises(TypeError, match="cannot make a tensor from data of dtype <U1"):
        bg.tensor(["a", "b"], device=backend)
    with pytest.raises(TypeError, match=r"gradcheck needs float64 inputs, got float32 for shape \(2,\)"):
        bg.gradcheck(lambda x: x * 2, [bg.tensor([1.0, 2.0], device=backend, requires_grad=True)])


def test_backward_errors(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"implicitly only for scalar outputs; this tensor has shape \(2,\): "
                                           r"pass backward\(gradient=...\)"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\) but the tensor has shape \(2,\)"):
        (x * 2).backward(gradient=np.ones(3))
    with pytest.raises(RuntimeError, match=r"only for scalar outputs; this tensor has shape \(2,\)"):
        bg.grad(x * 2, x)
    with pytest.raises(RuntimeError, match="does not require grad and has no grad_fn"):
        bg.tensor([1.0], device=backend).sum().backward()
    with pytest.raises(RuntimeError, match=r"an input of shape \(1,\) does not require grad"):
        bg.grad((x * 2).sum(), bg.tensor([1.0], device=backend))
    with bg.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"an output of shape \(\) does not require grad"):
        bg.grad(y, x)


def test_second_backward_through_a_freed_graph(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(GraphFreedError, match=r"backward through the graph a second time \(at sum\).*freed.*"
                                              r"retain_graph=True") as e:
        y.backward()
    assert isinstance(e.value, RuntimeError)
    h = x.exp()
    (h * 2).sum().backward()
    with pytest.raises(GraphFreedError, match=r"\(at exp\)"):
        (h * 3).sum().backward()  # a new graph on top of a freed part


def test_version_error_names_op_shapes_and_versions(backend):
    x = bg.tensor(np.ones((2, 3)), device=backend, requires_grad=True)
    w = bg.tensor(np.ones((3, 4)), device=backend)
    y = (x @ w).sum()
    w.mul_(2)
    w.add_(1)
    with pytest.raises(RuntimeError, match=r"needed by matmul \(inputs of shapes \(2, 3\), \(3, 4\)\) was modified by "
                                           r"an in-place operation after it was saved: its version is 2, expected 0\. "
                                           r".*clone"):
        y.backward()


def test_inplace_errors(backend):
    x = bg.tensor([1.0, 2.0], device=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="add_: in-place change of a leaf tensor that requires grad while grad "
                                           r"mode is on; wrap it in bg.no_grad\(\)"):
        x.add_(1)
    h = x * 2
    v = h[:1]  # a view on the graph: changing h in place would not reach v's gradient
    with pytest.raises(RuntimeError, match=r"zero_: in-place change of a tensor \(shape \(2,\)\) that shares its "
                                           r"storage with another tensor on the graph"):
        h.zero_()
    with pytest.raises(RuntimeError, match="shares its storage"):
        v.mul_(2)
    counts = bg.zeros(2, dtype=bg.int64, device=backend)
    with pytest.raises(RuntimeError, match="add_: result type float32 can't be cast to the desired output type int64"):
        counts.add_(x)
    np.testing.assert_array_equal(counts.numpy(), [0, 0])  # refused before anything changed


def test_scalar_conversion_errors(backend):
    t = bg.zeros(2, 3, device=backend)
    with pytest.raises(ValueError, match=r"item\(\) needs a tensor with one element, got shape \(2, 3\)"):
        t.item()
    with pytest.raises(ValueError, match=r"truth value of a tensor of shape \(2, 3\) is ambiguous"):
        bool(t)
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(bg.tensor(1.0, device=backend))
    with pytest.raises(TypeError, match="only integer tensors of one element can be used as an index"):
        [1, 2][bg.tensor(1.0, device=backend)]


# -- anomaly mode ---------------------------------------------------------------------------------
def test_anomaly_mode_raises_at_the_first_op_producing_nan(backend):
    x = bg.tensor([1.0, -1.0], dtype="float64", device=backend, requires_grad=True)
    with bg.detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError, match=r"op log \(inputs of shapes \(2,\)\) produced 1 NaN and 0 Inf"):
            bg.exp(bg.log(x) * 2)  # log is the first: exp and mul never run
        with pytest.raises(FloatingPointError, match=r"op exp .*produced 0 NaN and 1 Inf"):
            bg.exp(x * 1000)
        with pytest.raises(FloatingPointError, match=r"op div \(inputs of shapes \(2,\), \(\)\)"):
            x / bg.tensor(0.0, dtype="float64", device=backend)
    with np.errstate(all="ignore"):
        y = bg.exp(bg.log(x) * 2)  # off again: the NaN flows on
    assert np.isnan(y.numpy()[1])


def test_anomaly_mode_in_backward(backend):
    x = bg.tensor([0.0, 1.0], dtype="float64", device=backend, requires_grad=True)
    with bg.detect_anomaly(), np.errstate(all="ignore"):
        y = (bg.sqrt(x) * 3).sum()  # finite forward; d sqrt/dx at 0 is inf
        with pytest.raises(FloatingPointError, match=r"gradient of sqrt produced 0 NaN and 1 Inf value\(s\) in an "
                                                     r"array of shape \(2,\)"):
            y.backward()


def test_anomaly_mode_switches(backend):
    x = bg.tensor([-1.0], device=backend)

    @bg.detect_anomaly()
    def f():
        return bg.sqrt(x)

    with np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError):
            f()
        assert np.isnan(bg.sqrt(x).item())
        bg.set_detect_anomaly(True)
        try:
            with pytest.raises(FloatingPointError, match="op sqrt"):
                bg.sqrt(x)
            with bg.detect_anomaly(False):
                assert np.isnan(bg.sqrt(x).item())
        finally:
            bg.set_detect_anomaly(False)
        assert np.isnan(bg.sqrt(x).item())


# -- gradcheck itself -----------------------------------------------------------------------------
def test_gradcheck_reports_a_wrong_gradient(backend):
    x = bg.tensor(np.array([1.0, 2.0, 3.0]), device=backend, requires_grad=True)
    wrong = lambda x: x * x.detach()
    with pytest.raises(bg.GradcheckError, match=r"input 0 of shape \(3,\): at index \(\d,\) analytic \S+ vs "
                                                r"numerical \S+ \(3 of 3 elements off\)") as e:
        bg.gradcheck(wrong, [x])
    analytic, numerical = (float(v) for v in re.search(r"analytic (\S+) vs numerical (\S+)", str(e.value)).groups())
    assert numerical == pytest.approx(2 * analytic, rel=1e-6)  # d(x*x)/dx = 2x; the detached factor hides half
    assert bg.gradcheck(wrong, [x], raise_exception=False) is False
    nan = lambda x: bg.sqrt(x[:1] * 0)  # d sqrt(0 x) = 0 / 0
    with np.errstate(all="ignore"), pytest.raises(bg.GradcheckError, match="nan"):
        bg.gradcheck(nan, [x])
    with pytest.raises(ValueError, match="no input requires grad"):
        bg.gradcheck(lambda x: x * 2, [bg.tensor(np.ones(2), device=backend)])
