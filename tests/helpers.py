"""Tensor makers shared by the backend-parametrized tests (each takes the fixture's backend object)."""
import numpy as np

import backprop_gpu as bg


def x64(backend, v, grad=True):
    """``v`` as a float64 tensor on ``backend``, requiring grad unless ``grad`` is False."""
    return bg.tensor(np.asarray(v, dtype=np.float64), device=backend, requires_grad=grad)


def idx(backend, arr):
    """An integer index array as a tensor on ``backend`` (CuPy wants device index arrays)."""
    return bg.tensor(np.asarray(arr, dtype=np.int64), device=backend)
