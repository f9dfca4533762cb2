"""Numba's CPU code uses the widest vectors the CPU has (backprop_gpu.array.cpu_vectors): the
setting is made before Numba's code generator starts, and leaves the user's own choices alone."""
import os
import subprocess
import sys

import pytest

SCRIPT = """
import os, re, numba, numpy as np
import backprop_gpu.array.optim.numba_cpu  # makes the setting, as the numba backend does
@numba.njit(error_model="numpy")
def axpy(a, x, y):
    for i in range(x.shape[0]):
        y[i] += a * x[i]
x = np.ones(64, np.float32); axpy(np.float32(2), x, x.copy())
asm = "".join(axpy.inspect_asm().values())
print(os.environ.get("NUMBA_CPU_FEATURES", "unset").endswith("-prefer-256-bit"), "zmm" in asm)
"""


def _host_has_avx512() -> bool:
    import llvmlite.binding as ll

    return "+avx512f" in ll.get_host_cpu_features().flatten().split(",")


def _run(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES",
                                                               "BACKPROP_GPU_VECTOR_BITS")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**base, **env, "NUMBA_DISABLE_CACHE": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_avx512_machines_compile_512_bit_vectors():
    if not _host_has_avx512():
        pytest.skip("this CPU has no AVX-512: nothing to widen")
    assert _run() == ["True", "True"]


def test_the_users_choice_and_the_opt_out_are_left_alone():
    assert _run(BACKPROP_GPU_VECTOR_BITS="256") == ["False", "False"]
    assert _run(NUMBA_CPU_NAME="generic")[0] == "False"
