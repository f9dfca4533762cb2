"""Raw CuPy arrays are accepted wherever NumPy arrays are (issue 13 item 3): real CuPy refuses implicit
conversion to NumPy, which the recording stand-in imitates (strict mode), so each case runs there."""
import numpy as np
import pytest

import backprop_gpu as bg
import backprop_gpu.nn.functional as F
from backprop_gpu import nn, optim


@pytest.fixture
def stand_in(monkeypatch, tmp_path_factory):
    import recording_cupy

    return recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))


def _host(a):
    import recording_cupy

    return recording_cupy.peek(a) if hasattr(recording_cupy, "peek") else np.asarray(a)


def test_loss_targets_and_weights_as_raw_cupy_arrays(stand_in):
    rec, backend = stand_in
    cp = backend.xp
    x = bg.tensor(np.random.default_rng(0).standard_normal((4, 3)), device=backend, requires_grad=True)
    ref = F.cross_entropy(bg.tensor(x.numpy()), bg.tensor([0, 2, 1, 2]))
    got = F.cross_entropy(x, cp.asarray(np.array([0, 2, 1, 2])))
    np.testing.assert_allclose(got.item(), ref.item(), rtol=1e-12)
    nll = F.nll_loss(x, cp.asarray(np.array([1, 1, 0, 2])))
    assert np.isfinite(nll.item())
    logits = bg.tensor(np.zeros((2, 3)), device=backend)
    bce = F.binary_cross_entropy_with_logits(logits, cp.asarray(np.ones((2, 3))), pos_weight=cp.asarray(np.full(3, 2.0)))
    np.testing.assert_allclose(bce.item(), 2 * np.log(2), rtol=1e-12)


def test_embedding_indices_as_a_raw_cupy_array(stand_in):
    rec, backend = stand_in
    emb = nn.Embedding(5, 2, device=backend)
    out = emb(backend.xp.asarray(np.array([[0, 4], [3, 3]])))
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out.numpy()[1, 0], emb.weight.numpy()[3])


def test_state_dicts_take_raw_cupy_arrays(stand_in):
    rec, backend = stand_in
    cp = backend.xp
    m = nn.Linear(3, 2, device=backend)
    m.load_state_dict({"weight": cp.asarray(np.ones((2, 3), np.float32)), "bias": cp.asarray(np.zeros(2, np.float32))})
    np.testing.assert_array_equal(m.weight.numpy(), np.ones((2, 3)))
    opt = optim.Adam(m.parameters(), lr=0.1)
    m(bg.ones(4, 3, device=backend)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    raw = {"state": {k: {n: (cp.asarray(v.numpy()) if isinstance(v, bg.Tensor) else v) for n, v in s.items()}
                     for k, s in sd["state"].items()}, "param_groups": sd["param_groups"]}
    opt2 = optim.Adam(m.parameters(), lr=0.1)
    opt2.load_state_dict(raw)
    for k, s in opt2.state_dict()["state"].items():
        for n, v in s.items():
            if isinstance(v, bg.Tensor):
                np.testing.assert_array_equal(v.numpy(), sd["state"][k][n].numpy())


def test_tensors_from_raw_cupy_arrays(stand_in):
    rec, backend = stand_in
    a = backend.xp.asarray(np.arange(6.0).reshape(2, 3))
    on_gpu = bg.tensor(a, device=backend)
    on_cpu = bg.tensor(a, device="cpu")
    as_t = bg.as_tensor(a)
    np.testing.assert_array_equal(on_gpu.numpy(), on_cpu.numpy())
    assert on_cpu.device.type == "cpu" and as_t.device == backend.device


def test_moving_between_gpus_never_goes_through_the_host(monkeypatch, tmp_path_factory):
    import recording_cupy

    from backprop_gpu.array import get_backend

    rec, gpu0 = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"), n_devices=2)
    gpu1 = get_backend("cupy:1")
    x = bg.tensor(np.arange(6.0), device=gpu0, requires_grad=True)
    with rec.count() as c:
        y = x.to(gpu1)
        (y * y).sum().backward()
    assert c.syncs == 0 and c.h2d == 0, c.table()
    assert y.device == "cuda:1" and x.grad.device == "cuda:0"
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.arange(6.0))


def test_every_op_runs_on_its_tensors_gpu(monkeypatch, tmp_path_factory):
    """Two GPUs in one process: a model on cuda:1 trains after work on cuda:0, and each op, kernel
    and allocation runs on cuda:1 (the stand-in refuses an array used while another device is
    current, as a launch there would be); then cuda:0 work runs on cuda:0 again."""
    import recording_cupy

    from backprop_gpu.array import get_backend

    rec, gpu0 = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"), n_devices=2)
    gpu1 = get_backend("cupy:1")
    bg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)).to(gpu1)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = bg.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32), device=gpu1)
    y = bg.tensor(np.array([0, 1, 2, 1, 0]), device=gpu1)
    w0 = bg.ones(3, 3, device=gpu0, requires_grad=True)
    for _ in range(2):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        (w0 * w0).sum().backward()  # cuda:0 in between
    assert all(p.device == "cuda:1" for p in model.parameters()) and w0.grad.device == "cuda:0"
    assert np.isfinite(loss.item())
    np.testing.assert_array_equal(w0.grad.numpy(), np.full((3, 3), 4.0))


@pytest.mark.gpu
def test_cupy_and_numba_cuda_on_one_gpu_trade_tensors_on_the_device(monkeypatch):
    """The numba-cuda backend's kernels take CuPy arrays (``__cuda_array_interface__``): a tensor
    moves between the two backends of one GPU without a trip through host memory, and a numba-cuda
    optimizer step runs on the moved CuPy arrays."""
    from backprop_gpu.array import modules

    def refuse(self, arr):
        raise AssertionError("a move between two backends of one GPU went through the host")
    x = bg.tensor(np.arange(6.0, dtype=np.float32), device="cupy:0", requires_grad=True)
    monkeypatch.setattr(modules.CupyArrays, "to_host", refuse)
    y = x.detach().to("numba-cuda:0").requires_grad_(True)
    back = y.to("cupy:0")
    assert y.backend.name == "numba-cuda" and type(y.array).__module__.startswith("cupy")
    opt = bg.optim.SGD([y], lr=0.5)
    (y * y).sum().backward()
    opt.step()  # a numba-cuda kernel launched on CuPy arrays
    monkeypatch.undo()
    np.testing.assert_allclose(y.numpy(), np.arange(6.0) * 0.0, atol=0)  # y - 0.5 * 2y
    np.testing.assert_array_equal(back.numpy(), np.arange(6.0))
