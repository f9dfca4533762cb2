"""Devices and backends: device strings, moving tensors, mixing devices, a missing GPU, 'auto'."""
import logging

import numpy as np
import pytest
import scipy.special

import backprop_gpu as bg
from backprop_gpu.array import registry as backends
from backprop_gpu.array import BACKENDS, Device

HAVE_CUDA_BACKEND = "numba-cuda" in bg.available_backends()  # the simulator on a machine without a GPU
HAVE_GPU = "cupy" in bg.available_backends()
needs_numba_cuda = pytest.mark.skipif(not HAVE_CUDA_BACKEND, reason="needs numba-cuda (a GPU or the simulator)")


def test_available_backends():
    names = bg.available_backends()
    assert "numpy" in names and set(names) <= set(BACKENDS)
    for name in BACKENDS:
        assert (name in names) == (BACKENDS[name].availability() is None)
    try:
        import numba  # noqa: F401
        assert "numba" in names
    except ImportError:
        assert "numba" not in names


def test_device_strings_resolve():
    cpu = bg.get_backend("cpu")
    assert cpu.name == ("numba" if "numba" in bg.available_backends() else "numpy")
    assert bg.get_backend(" CPU ") is cpu and bg.get_backend(Device("cpu")) is cpu
    assert bg.get_backend(cpu) is cpu
    assert bg.get_backend(None) is bg.default_backend()
    assert bg.get_backend("numpy").name == "numpy" and bg.get_backend("numpy") is bg.get_backend("numpy")
    assert bg.device("cpu") == "cpu" and bg.device("numpy") == Device("cpu")


def test_device_objects():
    d = Device("cuda", 0)
    assert d == "cuda:0" and d == "cuda" and d != "cpu" and d != Device("cuda", 1)
    assert str(d) == "cuda:0" and repr(d) == "device('cuda:0')" and str(Device("cpu")) == "cpu"
    assert len({Device("cuda", 0), Device("cuda", 0), Device("cpu")}) == 2


def test_backend_primitives(backend):
    b = bg.get_backend(backend)
    x = b.asarray(np.array([-1.0, 0.0, 0.5]))
    np.testing.assert_allclose(b.to_host(b.erf(x)), scipy.special.erf([-1.0, 0.0, 0.5]))
    target = b.asarray(np.zeros(3))
    b.scatter_add(target, b.asarray(np.array([0, 2, 0, 0])), b.asarray(np.ones(4)))
    host = b.to_host(target)
    np.testing.assert_array_equal(host, [3.0, 0.0, 1.0])  # repeated indices accumulate
    assert type(host) is np.ndarray
    host[0] = 10
    assert b.to_host(target)[0] == 3.0  # to_host copies
    b.synchronize()


def test_ops_compute_on_the_backends_arrays(backend):
    b = bg.get_backend(backend)
    y = bg.tensor([1.0, 2.0], device=backend) * 2
    assert y.backend is b and type(y.array) is type(b.asarray(np.zeros(1)))
    z = bg.tensor(3.0, device=backend) * 2  # 0-d results stay arrays (NumPy would give a scalar)
    assert type(z.array) is type(b.asarray(np.zeros(1)))


@pytest.mark.parametrize("src", ["numpy", "numba", "numba-cuda"])
def test_to_moves_differentiably(backend, src):
    if src not in bg.available_backends():
        pytest.skip(f"{src} unavailable")
    x = bg.tensor([1.0, 2.0], device=src, requires_grad=True)
    y = x.to(backend)
    assert y.backend is bg.get_backend(backend) and y.device == bg.get_backend(backend).device
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])
    assert (x.to(src) is x) and (y.to(backend) is y)
    (y * y).sum().backward()
    assert x.grad.device == x.device
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    c = y.cpu()
    assert c.device == "cpu" and (c is y) == (y.device == "cpu")


@needs_numba_cuda
def test_to_another_device_copies():
    x = bg.tensor([1.0, 2.0], device="cpu")
    y = x.to("numba-cuda")
    assert y.device == "cuda:0"
    y.add_(1)  # (the simulator's arrays are host arrays too; the move still copies)
    assert x.tolist() == [1.0, 2.0] and y.tolist() == [2.0, 3.0]


def test_mixing_cpu_backends_is_allowed():
    a, b = bg.tensor([1.0], device="numpy"), bg.tensor([2.0], device="cpu")
    assert (a + b).item() == 3.0  # one device, whichever backend computes


@needs_numba_cuda
@pytest.mark.parametrize("what", ["add", "rmul", "matmul", "where", "maximum", "concatenate", "stack", "inplace"])
def test_mixing_devices_raises_device_mismatch(what):
    a = bg.tensor([[1.0, 2.0]], device="cpu")
    b = bg.tensor([[3.0, 4.0]], device="numba-cuda")
    assert a.device == "cpu" and b.device == "cuda:0"
    op = {
        "add": lambda: a + b, "rmul": lambda: b * a, "matmul": lambda: a @ b.T,
        "where": lambda: bg.where(a > 1, a, b), "maximum": lambda: bg.maximum(b, a),
        "concatenate": lambda: bg.concatenate([a, b]), "stack": lambda: bg.stack([b, a]),
        "inplace": lambda: a.add_(b),
    }[what]
    with pytest.raises(bg.DeviceMismatchError, match=r"different devices.*(cpu.*cuda:0|cuda:0.*cpu)") as e:
        op()
    assert isinstance(e.value, RuntimeError)
    assert (a + b.cpu()).tolist() == [[4.0, 6.0]]
    assert (a.to("numba-cuda") + b).device == "cuda:0"


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    x = bg.tensor([1.0])
    before = bg.default_backend()
    for make in (lambda: bg.zeros(2, device="cuda"), lambda: bg.tensor([1.0], device="cuda:0"),
                 lambda: x.to("cuda"), lambda: x.cuda(), lambda: bg.get_backend("cupy"),
                 lambda: bg.set_default_device("cuda"), lambda: bg.device("gpu")):
        with pytest.raises(bg.BackendUnavailableError,
                           match=r"cupy backend\) is not available: .*(CuPy is not installed|no CUDA driver or GPU)"):
            make()
    assert bg.default_backend() is before
    assert issubclass(bg.BackendUnavailableError, RuntimeError)


@pytest.mark.skipif(not HAVE_CUDA_BACKEND or HAVE_GPU, reason="needs the CUDA simulator")
def test_the_simulator_has_one_device():
    with pytest.raises(bg.BackendUnavailableError, match="one device; cuda:1 requested"):
        bg.get_backend("numba-cuda:1")


def test_auto_falls_back_to_the_cpu_and_says_why(caplog, monkeypatch):
    monkeypatch.setattr(backends, "_auto_logged", False)
    with caplog.at_level(logging.INFO, logger="backprop_gpu"):
        dev = bg.device("auto")
        t = bg.zeros(1, device="auto")
    if HAVE_GPU:
        assert dev == "cuda:0" and "chose cuda:0" in caplog.text
        return
    assert dev == "cpu" and t.device == "cpu"
    cpu_name = bg.get_backend("cpu").name
    assert f"device 'auto' chose cpu ({cpu_name})" in caplog.text and "CuPy" in caplog.text
    assert caplog.text.count("device 'auto' chose") == 1  # logged once


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:1", "", "gpu:", "cuda:-1", "numpy:a"])
def test_unknown_device_strings(spec):
    with pytest.raises(ValueError, match="device|index"):
        bg.zeros(1, device=spec)


def test_unknown_device_message_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; expected one of cpu, cuda, cuda:N, auto"):
        bg.get_backend("tpu")
    with pytest.raises(TypeError, match="device must be a string"):
        bg.zeros(1, device=0)


def test_set_default_device(monkeypatch):
    monkeypatch.setattr(backends, "_default", None)
    bg.set_default_device("numpy")
    assert bg.zeros(1).backend.name == "numpy" and bg.tensor([1.0]).backend.name == "numpy"
    with pytest.raises(ValueError):
        bg.set_default_device("tpu")
    assert bg.default_backend().name == "numpy"


@needs_numba_cuda
def test_batch_norm_with_parameters_on_another_device_changes_nothing():
    from backprop_gpu import nn

    bn = nn.BatchNorm2d(2)  # on the CPU
    bn.weight = nn.Parameter(bg.ones(2, device="numba-cuda"))
    x = bg.tensor(np.random.default_rng(0).standard_normal((3, 2, 2, 2)), device="cpu").float()
    with pytest.raises(bg.DeviceMismatchError, match=r"batch_norm: input \(3, 2, 2, 2\) is on cpu but weight is "
                                                     r"on cuda:0"):
        bn(x)
    assert bn.running_mean.tolist() == [0.0, 0.0] and bn.running_var.tolist() == [1.0, 1.0]
