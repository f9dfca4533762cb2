"""Datasets: bundled digits, MNIST from IDX files, synthetic spirals and linear regression.

A dataset is an :class:`ArrayDataset`: host NumPy arrays ``x`` (float32) and
``y`` (int64 class labels, or float32 regression targets). Nothing is ever
downloaded.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ArrayDataset:
    """Features ``x`` and targets ``y`` as host arrays, with a name for reports."""

    x: np.ndarray
    y: np.ndarray
    name: str = ""

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"dataset {self.name!r}: {len(self.x)} inputs but {len(self.y)} targets")

    def __len__(self):
        return len(self.x)

    @property
    def num_classes(self) -> int:
        """One more than the largest integer label (0 for regression targets or no samples)."""
        return int(self.y.max()) + 1 if self.y.dtype.kind in "iu" and len(self.y) else 0


def _digits_csv() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (whose import
    takes over a second: most of a one-epoch run), or ``None`` where it is not at the usual place."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per class, how many of ``n_draws`` to take: the floored proportional share, the remainder given
    to the largest fractional parts, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            take = min(len(inds), need)
            floored[rng.choice(inds, size=take, replace=False)] += 1
            need -= take
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a stratified shuffle split: the same indices as scikit-learn's
    ``train_test_split(..., test_size=test_fraction, random_state=seed, stratify=y)`` (its
    ``StratifiedShuffleSplit`` steps and random draws, re-stated so that no scikit-learn import is needed)."""
    n = len(y)
    n_test = int(math.ceil(test_fraction * n))
    n_train = n - n_test
    _, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or min(n_train, n_test) < len(class_counts):
        raise ValueError(f"cannot split {n} samples of {len(class_counts)} classes (the smallest has "
                         f"{class_counts.min()}) into {n_train} train and {n_test} test, stratified")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(class_counts)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[:n_i[i]])
        test.extend(perm[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def digits(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1],
    split into train and test with a fixed stratified split (scikit-learn's ``train_test_split``
    with ``stratify``; see :func:`stratified_split`)."""
    path = _digits_csv()
    if path is not None:
        data = np.loadtxt(path, delimiter=",")  # what load_digits reads: 64 pixels, then the label
        x, y = data[:, :-1], data[:, -1].astype(int)
    else:  # an unusual install: let scikit-learn find its own file
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    train, test = stratified_split(y, test_fraction, seed)
    y = y.astype(np.int64)
    return ArrayDataset(x[train], y[train], "digits/train"), ArrayDataset(x[test], y[test], "digits/test")


class IDXError(ValueError):
    """An IDX file is missing, truncated or not what it claims to be."""


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into an array, validating its header and size."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise IDXError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    kind, ndim = data[2], data[3]
    if kind not in _IDX_TYPES:
        raise IDXError(f"{path}: unknown IDX element type 0x{kind:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes for {ndim} dimensions)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[kind])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(f"{path}: header says shape {dims} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"MNIST directory {root} has no {stem}[.gz]")


def mnist(root):
    """MNIST (or any dataset in MNIST's layout) from the standard IDX files in ``root``:
    train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte, each optionally gzipped. Images are flattened and scaled to [0, 1]."""
    if root is None:
        raise ValueError("the mnist dataset needs --data-dir pointing at a directory of IDX files")
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST directory {root} does not exist")
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXError(f"{root}/{split}: images of shape {images.shape} do not match labels of shape "
                           f"{labels.shape}")
        if images.size == 0:
            raise IDXError(f"{root}/{split}: the IDX files hold no images (images of shape {images.shape})")
        if labels.dtype.kind not in "iu":
            raise IDXError(f"{root}/{split}: labels must be integers, the IDX file holds {labels.dtype}")
        x = (images.reshape(len(images), -1) / 255.0).astype(np.float32)
        out.append(ArrayDataset(x, labels.astype(np.int64), f"mnist/{split}"))
    return out[0], out[1]


def spirals(n_per_class: int = 200, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved 2-D spirals, one arm per class (train and test drawn separately)."""
    rng = np.random.default_rng(seed)

    def draw(n):
        xs, ys = [], []
        for c in range(classes):
            r = np.linspace(0.0, 1.0, n)
            theta = np.linspace(c * 4.0, (c + 1) * 4.0, n) + rng.standard_normal(n) * noise
            xs.append(np.c_[r * np.sin(theta), r * np.cos(theta)])
            ys.append(np.full(n, c))
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)

    (xtr, ytr), (xte, yte) = draw(n_per_class), draw(max(n_per_class // 4, 1))
    return ArrayDataset(xtr, ytr, "spirals/train"), ArrayDataset(xte, yte, "spirals/test")


def linear_regression(n: int = 512, features: int = 8, noise: float = 0.1, seed: int = 0):
    """y = x w + b + noise, with fixed random w and b (targets of shape (n, 1))."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, 1))
    x = rng.standard_normal((n + n // 4, features))
    y = x @ w + 0.5 + noise * rng.standard_normal((len(x), 1))
    x, y = x.astype(np.float32), y.astype(np.float32)
    return ArrayDataset(x[:n], y[:n], "linear/train"), ArrayDataset(x[n:], y[n:], "linear/test")


DATASETS = {"digits": digits, "mnist": mnist, "spirals": spirals, "linear": linear_regression}


def _values(v: np.ndarray, most: int = 5) -> str:
    u = np.unique(v)
    return ", ".join(str(int(x)) for x in u[:most]) + (f", ... ({len(u)} values)" if len(u) > most else "")


def check_labels(train: ArrayDataset, test: ArrayDataset) -> None:
    """Refuse class labels that training would trip over (``ValueError`` naming them), before any training:
    negative labels, and test labels outside the training classes ``0 .. max(train label)``, which the
    model (one output per training class) cannot score. Regression targets (floats) pass unchecked."""
    if train.y.dtype.kind not in "iu":
        return
    for ds in (train, test):
        neg = ds.y < 0
        if neg.any():
            raise ValueError(f"dataset {ds.name!r}: {int(neg.sum())} of {len(ds.y)} labels are negative "
                             f"({_values(ds.y[neg])}); class labels must be 0, 1, 2, ...")
    k = train.num_classes
    out = test.y >= k
    if out.any():
        raise ValueError(f"dataset {test.name!r}: {int(out.sum())} of {len(test.y)} test labels "
                         f"({_values(test.y[out])}) lie outside the training classes 0-{k - 1}: the model "
                         f"gets one output per training class")


def load(name: str, data_dir=None):
    """(train, test) for a dataset name; ``data_dir`` is needed by ``mnist``. Class labels are
    checked (:func:`check_labels`) here, so that bad ones stop a run before it trains."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    train, test = DATASETS[name](data_dir) if name == "mnist" else DATASETS[name]()
    check_labels(train, test)
    return train, test
