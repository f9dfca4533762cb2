"""Layers and initialisers with a zero-sized dimension, against PyTorch (which builds them)."""
import warnings

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import nn

torch = pytest.importorskip("torch")

SHAPES = [(0, 5), (5, 0), (0, 0), (0,), (0, 4, 3, 3), (4, 0, 3, 3)]
INITS = ["uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_",
         "kaiming_uniform_", "kaiming_normal_"]


def _outcome(fn, *args):
    """(error type or None, the warnings' messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn(*args)
            err = None
        except Exception as e:  # noqa: BLE001 - the type is what is compared
            err = type(e).__name__
    return err, [str(w.message) for w in caught]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", INITS)
def test_init_of_zero_element_tensors_matches_torch(name, shape):
    extra = (0.5,) if name == "constant_" else ()
    want = _outcome(getattr(torch.nn.init, name), torch.empty(shape), *extra)
    t = bg.empty(*shape)
    got = _outcome(getattr(nn.init, name), t, *extra)
    if name.startswith("xavier") and shape == (0, 0):
        # torch divides by fan_in + fan_out == 0 here; there is nothing to fill, so we leave it unchanged
        assert want == ("ZeroDivisionError", []) and got == (None, [])
    else:
        assert got == want
    assert tuple(t.shape) == shape


def test_kaiming_still_checks_its_arguments_on_an_empty_tensor():
    with pytest.raises(ValueError, match="'fan_avg'"):
        nn.init.kaiming_uniform_(bg.empty(0, 5), mode="fan_avg")
    with pytest.raises(ValueError, match="'swish'"):
        nn.init.kaiming_normal_(bg.empty(0, 5), nonlinearity="swish")


def _linear_pair(in_f, out_f):
    """torch's and our Linear(in_f, out_f), built (with torch's warning) and given the same random bias."""
    with pytest.warns(UserWarning, match="zero-element"):
        tl = torch.nn.Linear(in_f, out_f)
    with pytest.warns(UserWarning, match="zero-element"):
        ml = nn.Linear(in_f, out_f)
    assert tuple(ml.weight.shape) == tuple(tl.weight.shape)
    np.testing.assert_array_equal(ml.bias.numpy(), tl.bias.detach().numpy())  # U(0, 0) without inputs
    b = np.random.default_rng(0).standard_normal(out_f).astype(np.float32)
    with bg.no_grad():
        ml.bias.copy_(bg.tensor(b))
    with torch.no_grad():
        tl.bias.copy_(torch.from_numpy(b))
    xn = np.ones((3, in_f), np.float32)
    tx, mx = torch.tensor(xn, requires_grad=True), bg.tensor(xn, requires_grad=True)
    return tl, ml, tx, mx


@pytest.mark.parametrize("in_f,out_f", [(0, 5), (5, 0), (0, 0)])
def test_linear_with_a_zero_sized_side_matches_torch(in_f, out_f):
    tl, ml, tx, mx = _linear_pair(in_f, out_f)
    np.testing.assert_allclose(ml(mx).numpy(), tl(tx).detach().numpy())  # the bias, broadcast over the batch


# the Linear VJP once reshaped with -1 beside a 0-sized axis, which NumPy refuses
@pytest.mark.parametrize("in_f,out_f", [(0, 5), (5, 0), (0, 0)])
def test_linear_with_a_zero_sized_side_backward_matches_torch(in_f, out_f):
    tl, ml, tx, mx = _linear_pair(in_f, out_f)
    ty, my = tl(tx), ml(mx)
    g = np.random.default_rng(1).standard_normal((3, out_f)).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    my.backward(bg.tensor(g))
    for mine, theirs in [(ml.weight, tl.weight), (ml.bias, tl.bias), (mx, tx)]:
        assert tuple(mine.grad.shape) == tuple(theirs.grad.shape)
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_conv2d_without_input_channels_builds_and_gives_its_bias():
    with pytest.warns(UserWarning, match="zero-element"):
        tc = torch.nn.Conv2d(0, 4, 3)
    with pytest.warns(UserWarning, match="zero-element"):
        mc = nn.Conv2d(0, 4, 3)
    assert tuple(mc.weight.shape) == tuple(tc.weight.shape) == (4, 0, 3, 3)
    np.testing.assert_array_equal(mc.bias.numpy(), np.zeros(4, np.float32))  # no fan in: U(0, 0), as Linear's
    b = np.arange(1, 5, dtype=np.float32)
    with bg.no_grad():
        mc.bias.copy_(bg.tensor(b))
    y = mc(bg.ones(2, 0, 5, 5))
    # torch returns an empty (2, 0, 3, 3) here; a sum over no channels is 0, so the output is the bias,
    # which is what torch gives for one channel of zeros
    want = torch.nn.functional.conv2d(torch.zeros(2, 1, 5, 5), torch.zeros(4, 1, 3, 3), torch.from_numpy(b))
    np.testing.assert_array_equal(y.numpy(), want.numpy())


def test_conv2d_without_output_channels_builds_as_torch():
    with pytest.warns(UserWarning, match="zero-element"):
        tc = torch.nn.Conv2d(4, 0, 3)
    with pytest.warns(UserWarning, match="zero-element"):
        mc = nn.Conv2d(4, 0, 3)
    assert tuple(mc.weight.shape) == tuple(tc.weight.shape) and tuple(mc.bias.shape) == tuple(tc.bias.shape)
