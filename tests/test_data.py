"""Datasets, the IDX reader and the DataLoader's regimes."""
import gzip
import struct

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu.app.data import ArrayDataset, IDXError, digits, load, mnist, read_idx, spirals
from backprop_gpu.utils.data import DataLoader


def write_idx(path, arr, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def tiny_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 12, True), ("t10k", 5, False)):
        write_idx(tmp_path / (f"{split}-images-idx3-ubyte" + (".gz" if gz else "")),
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(tmp_path / (f"{split}-labels-idx1-ubyte" + (".gz" if gz else "")),
                  rng.integers(0, 10, n, dtype=np.uint8), gz)
    return tmp_path


def test_mnist_reads_gzipped_and_plain_idx(tiny_mnist):
    train, test = mnist(tiny_mnist)
    assert train.x.shape == (12, 784) and test.x.shape == (5, 784)
    assert train.x.dtype == np.float32 and 0 <= train.x.min() and train.x.max() <= 1
    assert train.y.dtype == np.int64
    raw = read_idx(tiny_mnist / "t10k-images-idx3-ubyte")
    np.testing.assert_allclose(test.x, raw.reshape(5, -1) / 255.0, rtol=1e-6)


def test_malformed_and_missing_idx(tmp_path, tiny_mnist):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(IDXError, match="bad magic number"):
        read_idx(bad)
    good = (tiny_mnist / "t10k-labels-idx1-ubyte").read_bytes()
    short = tmp_path / "short"
    short.write_bytes(good[:-2])
    with pytest.raises(IDXError, match=r"header says shape \(5,\) \(13 bytes\) but the file has 11 bytes"):
        read_idx(short)
    (tiny_mnist / "t10k-labels-idx1-ubyte").write_bytes(good[:6])
    with pytest.raises(IDXError, match="truncated header"):
        mnist(tiny_mnist)


def test_digits_split_is_fixed_and_stratified():
    a_train, a_test = digits()
    b_train, _ = digits()
    np.testing.assert_array_equal(a_train.x, b_train.x)
    assert len(a_train) + len(a_test) == 1797 and a_train.x.shape[1] == 64
    assert np.bincount(a_test.y).min() >= 43 and np.bincount(a_test.y).max() <= 47  # stratified: ~45 each
    with pytest.raises(ValueError, match="unknown dataset"):
        load("imagenet")


def test_loader_regimes(backend):
    ds = ArrayDataset(np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10), "t")
    full = list(DataLoader(ds, None, device=backend))
    assert len(full) == 1 and full[0][0].shape == (10, 2)
    sgd = list(DataLoader(ds, 1, shuffle=True, device=backend))
    assert len(sgd) == 10 and sorted(int(y.item()) for _, y in sgd) == list(range(10))
    mini = DataLoader(ds, 4, device=backend)
    assert [len(y) for _, y in mini] == [4, 4, 2] and len(mini) == 3
    assert [len(y) for _, y in DataLoader(ds, 4, drop_last=True)] == [4, 4]
    x, y = next(iter(mini))
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.device == bg.get_backend(backend).device
    # other dtypes are converted: features to float32, class labels to int64, regression targets to float32
    x, y = next(iter(DataLoader(ArrayDataset(np.ones((3, 2)), np.arange(3, dtype=np.uint8)), 2, device=backend)))
    assert x.dtype == np.float32 and y.dtype == np.int64
    _, y = next(iter(DataLoader(ArrayDataset(np.ones((3, 2)), np.ones((3, 1))), 2, device=backend)))
    assert y.dtype == np.float32


def test_loader_shuffles_per_epoch_reproducibly():
    ds = ArrayDataset(np.zeros((50, 1), np.float32), np.arange(50), "t")
    a = DataLoader(ds, 10, shuffle=True, seed=3)
    e1 = np.concatenate([y.numpy() for _, y in a])
    state = a.state_dict()
    e2 = np.concatenate([y.numpy() for _, y in a])
    assert not np.array_equal(e1, e2) and sorted(e1) == list(range(50))
    b = DataLoader(ds, 10, shuffle=True, seed=999)
    b.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in b]), e2)


def test_loader_shards_by_rank():
    ds = ArrayDataset(np.zeros((12, 1), np.float32), np.arange(12), "t")
    seen = [np.concatenate([y.numpy() for _, y in DataLoader(ds, 4, shuffle=True, seed=1, rank=r, world_size=2)])
            for r in range(2)]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 12
    with pytest.raises(ValueError, match="not divisible"):
        DataLoader(ds, 3, world_size=2)


def test_loader_errors():
    ds = ArrayDataset(np.zeros((3, 1)), np.zeros(3), "t")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(ds, 0)
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        ArrayDataset(np.zeros((3, 1)), np.zeros(2))


def test_spirals_are_balanced():
    train, test = spirals(n_per_class=40, classes=3)
    assert train.x.shape == (120, 2) and np.bincount(train.y).tolist() == [40, 40, 40] and len(test) == 30


def test_loader_over_a_tensor_dataset_matches_torch(backend):
    torch = pytest.importorskip("torch")
    from backprop_gpu.utils.data import TensorDataset

    x, y = np.arange(14, dtype=np.float32).reshape(7, 2), np.arange(7)
    ours = DataLoader(TensorDataset(bg.tensor(x, device=backend), bg.tensor(y, device=backend)), batch_size=3)
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
                                         batch_size=3)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert type(a) is type(b) is list and len(a) == 2
        for s, t in zip(a, b):
            assert s.device == backend.device and str(s.dtype) == str(t.dtype).removeprefix("torch.")
            np.testing.assert_array_equal(s.numpy(), t.numpy())
    # shuffled: every sample once per epoch, rows kept together, the order resumable from state_dict
    shuf = DataLoader(TensorDataset(bg.tensor(x), bg.tensor(y)), batch_size=2, shuffle=True, seed=5)
    state = shuf.state_dict()
    e1 = [(xb.numpy(), yb.numpy()) for xb, yb in shuf]
    assert sorted(np.concatenate([yb for _, yb in e1]).tolist()) == list(range(7))
    for xb, yb in e1:
        np.testing.assert_array_equal(xb, x[yb])
    again = DataLoader(TensorDataset(bg.tensor(x), bg.tensor(y)), batch_size=2, shuffle=True, seed=99)
    again.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([yb.numpy() for _, yb in again]),
                                  np.concatenate([yb for _, yb in e1]))
    # device given: batches move there
    moved = next(iter(DataLoader(TensorDataset(bg.tensor(x)), batch_size=2, device=backend)))[0]
    assert moved.device == backend.device


def test_loader_over_a_map_style_dataset_with_collate_fn_and_generator():
    from backprop_gpu.utils.data import Dataset

    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"i": i, "sq": np.float32(i * i)}

    batches = list(DataLoader(Squares(), batch_size=2))
    assert [b["i"].numpy().tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0]["sq"].dtype == np.float32 and batches[0]["i"].dtype == np.int64
    sums = list(DataLoader(Squares(), batch_size=5, collate_fn=lambda s: sum(d["sq"] for d in s)))
    assert sums == [30.0]
    order = [b["i"].numpy().tolist() for b in DataLoader(Squares(), 5, shuffle=True,
                                                         generator=np.random.default_rng(3))]
    assert order == [np.random.default_rng(3).permutation(5).tolist()]
    with pytest.raises(TypeError, match="generator must be a numpy.random.Generator"):
        DataLoader(Squares(), 2, generator=3)
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        DataLoader(Squares(), 2, collate_fn="stack")
