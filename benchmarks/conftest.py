"""pytest hooks for the benchmarks; the shared set-up lives in common.py (imported first, so the
thread settings are in place before NumPy, Numba or torch start)."""
from common import GPU_BACKENDS, THREADS, TORCH


def pytest_report_header(config):
    v = TORCH.__version__ if TORCH else "not installed"
    return f"backprop_gpu benchmarks: {THREADS} threads, torch {v}, GPU backends: {GPU_BACKENDS or 'none'}"
