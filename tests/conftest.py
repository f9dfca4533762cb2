"""Test set-up: the CUDA simulator when no GPU is present, the backend fixture, and
checked saves.

NUMBA_ENABLE_CUDASIM must be set before numba is first imported, so it is set
here, at the top of the first module pytest loads. The backends come from the
one registry, ``backprop_gpu.array.BACKENDS``; the fixture hands each test the
backend object itself. Every test runs with ``check_saves`` on, so any VJP that
reads an input its op did not declare in ``Op.saves`` fails.
"""
import os


def _gpu_present() -> bool:
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:
        return False


GPU = _gpu_present()
if not GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

import backprop_gpu as bg  # noqa: E402
from backprop_gpu.array import BACKENDS  # noqa: E402
from backprop_gpu.tape.engine import check_saves  # noqa: E402

check_saves(True)

ALL_BACKENDS = list(BACKENDS)


def _param(name):
    marks = [pytest.mark.gpu] if name == "cupy" else []
    why = BACKENDS[name].availability()
    if why:
        marks.append(pytest.mark.skip(reason=f"{name} backend unavailable: {why}"))
    return pytest.param(name, marks=marks, id=name)


BACKEND_PARAMS = [_param(n) for n in ALL_BACKENDS]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Each backend usable here, as a :class:`backprop_gpu.array.Backend` (numba-cuda under the
    simulator on a CPU-only machine). Pass it anywhere a device is taken: ``device=backend``."""
    bg.manual_seed(0)
    return bg.get_backend(request.param)


@pytest.fixture(autouse=True)
def _fresh_seed():
    bg.manual_seed(1234)
    yield


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs a real CUDA GPU (cupy.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# one line per distinct skip reason in the short summary (see skip_summary.py)
from skip_summary import pytest_terminal_summary  # noqa: E402,F401
