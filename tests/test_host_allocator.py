"""The CPU backend keeps freed host memory for reuse: a repeated 8 MB temporary stops page-faulting."""
import os
import subprocess
import sys
import textwrap

import pytest

from backprop_gpu.array import host_allocator

PROBE = textwrap.dedent("""
    import resource, numpy as np
    import backprop_gpu as bg
    from backprop_gpu.array import host_allocator
    bg.zeros(1, device="numpy")  # the first CPU backend applies (or skips) the tuning
    x = np.ones(2 << 20, np.float32)  # 8 MB
    for _ in range(3):
        (x * 2 + x * 3 + x * 4).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        (x * 2 + x * 3 + x * 4).sum()  # 8 MB temporaries, up to three at once, then freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(host_allocator.status()["applied"], faults)
""")


def _probe(**env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", int(faults)


needs_glibc = pytest.mark.skipif(host_allocator._glibc_mallopt() is None, reason="malloc is not glibc's here")


@needs_glibc
def test_freed_temporaries_are_reused_without_page_faults():
    applied, faults = _probe()
    assert applied
    # 50 steps' fresh 8 MB blocks would fault in ~200,000 pages; reused heap blocks fault in none
    assert faults < 500, faults


@needs_glibc
def test_opting_out_keeps_the_system_allocator():
    applied, faults = _probe(BACKPROP_GPU_HOST_ALLOCATOR="system")
    assert not applied
    assert faults > 10_000, faults  # glibc's default trims the freed blocks and faults them in again


@needs_glibc
def test_users_own_malloc_settings_win():
    applied, _ = _probe(MALLOC_ARENA_MAX="2")
    assert not applied


def test_why_not_names_the_reason(monkeypatch):
    monkeypatch.setenv("BACKPROP_GPU_HOST_ALLOCATOR", "system")
    assert host_allocator.why_not() == "BACKPROP_GPU_HOST_ALLOCATOR=system"
    monkeypatch.delenv("BACKPROP_GPU_HOST_ALLOCATOR")
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert "MALLOC_TOP_PAD_" in host_allocator.why_not()
