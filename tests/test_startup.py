"""What ``import backprop_gpu`` and a CPU training run load: only what they use.

Timings live in ``benchmarks/bench_startup.py`` (whole processes, median of runs); here, in a fresh
interpreter each, the modules that must *not* be imported, which holds on any machine.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: heavy optional parts, each costing 0.1-1.5 s to import, and what pulls them in
HEAVY = ("cupy", "ml_dtypes", "numba", "scipy", "sklearn", "matplotlib", "tqdm", "torch", "mpi4py")


def _loaded(code: str) -> set:
    """The HEAVY modules in sys.modules after running ``code`` in a fresh interpreter (no simulator)."""
    probe = code + f"\nimport sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def test_import_loads_no_optional_dependency():
    assert _loaded("import backprop_gpu") == set()


def test_public_submodules_load_on_first_use():
    code = ("import backprop_gpu as bg, sys\n"
            "assert 'backprop_gpu.nn' not in sys.modules and 'backprop_gpu.optim' not in sys.modules\n"
            "m = bg.nn.Sequential(bg.nn.Linear(2, 3)); o = bg.optim.SGD(m.parameters(), lr=0.1)\n"
            "from backprop_gpu import utils, autograd\n"
            "assert bg.utils.data.DataLoader and bg.save and bg.load and bg.gradcheck and bg.autograd.grad\n")
    # the default CPU backend is numba's (and Numba's CPU target imports scipy for BLAS): nothing else
    assert _loaded(code) <= {"numba", "scipy"}


def test_cpu_training_run_loads_only_what_it_uses(tmp_path):
    """A digits run on the CPU: Numba (its backend; Numba itself loads scipy), tqdm and matplotlib
    (progress and curves.png), but neither scikit-learn (the digits file is read directly) nor CuPy
    when no CUDA driver can be loaded."""
    from backprop_gpu.array.modules import _cuda_driver_unloadable

    code = ("from backprop_gpu.app.cli import main\n"
            f"assert main(['train', '--epochs', '1', '--no-progress', '--runs-dir', {str(tmp_path)!r}]) == 0\n")
    loaded = _loaded(code)
    assert "sklearn" not in loaded and "torch" not in loaded and "mpi4py" not in loaded
    assert {"numba", "matplotlib", "tqdm"} <= loaded
    if _cuda_driver_unloadable():
        assert "cupy" not in loaded and "ml_dtypes" not in loaded


def test_digits_split_is_scikit_learns():
    """The digits split read without scikit-learn is index for index scikit-learn's stratified
    ``train_test_split``, for the default seed and others, on digits and on random labels."""
    sk = pytest.importorskip("sklearn.model_selection")
    from sklearn.datasets import load_digits

    from backprop_gpu.app.data.datasets import digits, stratified_split

    train, test = digits()
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = sk.train_test_split((x / 16.0).astype(np.float32), y.astype(np.int64), test_size=0.25,
                                             random_state=0, stratify=y)
    for ours, theirs in ((train.x, xtr), (test.x, xte), (train.y, ytr), (test.y, yte)):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(5)
    for seed in range(3):
        for fraction in (0.1, 0.25, 0.5):
            labels = rng.integers(0, 7, size=int(rng.integers(60, 300)))
            tr, te = sk.train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed,
                                         stratify=labels)
            ours_tr, ours_te = stratified_split(labels, fraction, seed)
            np.testing.assert_array_equal(ours_tr, tr)
            np.testing.assert_array_equal(ours_te, te)


def test_stratified_split_refuses_a_class_of_one():
    from backprop_gpu.app.data.datasets import stratified_split

    with pytest.raises(ValueError, match="smallest has 1"):
        stratified_split(np.array([0, 0, 1, 2, 2, 2]), 0.5, 0)


def test_skip_summary_folds_one_reason_across_files(tmp_path):
    """tests/skip_summary.py: one line per skip reason, with its count, whatever the files and lines."""
    (tmp_path / "conftest.py").write_text("from skip_summary import pytest_terminal_summary  # noqa: F401\n")
    (tmp_path / "test_a.py").write_text(
        "import pytest\n"
        "@pytest.mark.skip(reason='no gpu')\n@pytest.mark.parametrize('i', range(3))\ndef test_x(i): pass\n"
        "def test_y():\n    pytest.skip('no gpu')\n"
        "def test_z():\n    pytest.skip('only here')\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_b.py").write_text(
        "import pytest\n@pytest.mark.skip(reason='no gpu')\ndef test_b(): pass\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).parent))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "-p", "no:benchmark",
                        str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert lines == ["SKIPPED [5] .: no gpu [in 2 files]", "SKIPPED [1] test_a.py:8: only here"], r.stdout
    assert "6 skipped" in r.stdout
