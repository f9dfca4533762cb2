"""The Philox-4x32-10 generator (``backprop_gpu.array.rng``) on every backend.

* The block function against Random123's published known-answer vectors, and the seed-0 stream
  of every backend against the first of them.
* Every backend fixture (numba-cuda under the simulator here) against the NumPy reference for
  the same seed and offset: uniforms (float16/bfloat16/float32/float64), Bernoulli masks,
  integers and permutations bit for bit; normals to an ulp or two (``log``/``cos``/``sin`` are
  each device's own libm or libdevice, and a float64 result within an ulp can still round to
  the neighbouring float32).
* The stream: two draws of n equal one of 2n; the offset advances by the blocks each draw uses;
  a saved state reproduces the next draw; bad states (old NumPy ones included) are refused.
* Moments of large draws, with their tolerances stated where they are checked.
* The cupy target's CUDA C compiled by NVRTC under CuPy's options, and the same C built for the
  host bit-equal to the reference; the Numba CUDA kernels compiled to PTX. (Neither ran on a GPU.)
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu.array import backend_availability, rng
from backprop_gpu.array.rng import cuda_source, philox as P, scalar
from helpers import gpu_available

# Random123's known-answer vectors for Philox4x32-10, as cut from the ``kat_vectors`` file of the
# Random123 distribution (D. E. Shaw Research) into DEShawResearch/Random123-Boost,
# libs/random/test/test_philox.cpp (test_kat_philox4x32): counter (4 words), key (2), output (4).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]

# (seed, offset): seed 0; a seed with both key words set whose counters cross from the low to the
# high counter word inside the draw; a negative seed's key near the top of the counter range
STREAMS = [(0, 0), (0x243F6A8885A308D3, (1 << 32) - 3), (rng.normalize_seed(-7), (1 << 64) - 2)]
SIZES = [0, 1, 3, 6, 8, 203]

# the last stream's counters wrap past 2**64, as the layout says they do; under the CUDA simulator the
# kernels' uint64 adds are NumPy scalar adds, which warn where the compiled kernels wrap silently
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in scalar add:RuntimeWarning")


def _at(backend, seed, offset):
    backend.set_rng_state({"generator": rng.NAME, "seed": seed, "offset": offset})


def _host(backend, a):
    return backend.to_host(a)


def _low_precision():
    out = [np.dtype(np.float16)]
    try:
        import ml_dtypes

        out.append(np.dtype(ml_dtypes.bfloat16))
    except ImportError:
        pass
    return out


# --- the block function ---------------------------------------------------------------------

@pytest.mark.parametrize("ctr,key,want", KAT)
def test_reference_block_matches_random123_kat(ctr, key, want):
    assert tuple(int(w) for w in P.philox4x32_10(ctr, key)) == want


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_numba_block_source_matches_random123_kat(ctr, key, want):
    # the function the Numba kernels compile, run as Python on NumPy scalars (as the CUDA simulator does)
    words = scalar._philox(*(np.uint64(c) for c in ctr), *(np.uint64(k) for k in key))
    assert tuple(int(w) for w in words) == want


def test_every_backend_seed_zero_starts_with_kat_vector_zero(backend):
    backend.manual_seed(0)
    # a span of 2**32 makes randint return the raw words: (w * 2**32) >> 32 == w
    words = _host(backend, backend.random_integers(0, 1 << 32, 4))
    assert tuple(int(w) for w in words) == KAT[0][2]
    assert backend.rng_state() == {"generator": "philox4x32-10", "seed": 0, "offset": 1}


# --- every backend against the reference ------------------------------------------------------

@pytest.mark.parametrize("seed,offset", STREAMS)
def test_uniforms_are_bit_identical_to_reference(backend, seed, offset):
    for n in SIZES:
        for dtype, bits in [(np.float32, 24), (np.float64, 53)] + [(d, 8 if d.name == "bfloat16" else 11)
                                                                    for d in _low_precision()]:
            _at(backend, seed, offset)
            got = _host(backend, backend.random_uniform((n,), dtype))
            want = P.uniform(seed, offset, n, bits).astype(dtype)
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"),
                                          err_msg=f"n={n} {np.dtype(dtype)}")
            assert backend.rng_state()["offset"] == (offset + P.uniform_blocks(n, bits)) % (1 << 64)


@pytest.mark.parametrize("seed,offset", STREAMS)
def test_bernoulli_masks_are_bit_identical_to_reference(backend, seed, offset):
    for n in SIZES:
        for dtype, bits in ((np.float32, 24), (np.float64, 53), (np.float16, 11)):
            for p in (0.0, 0.3, 0.5, 1.0):
                _at(backend, seed, offset)
                got = _host(backend, backend.random_bernoulli((n,), p, dtype))
                assert got.dtype == np.bool_
                # compared in the dtype: p rounded to it first
                want = P.uniform(seed, offset, n, bits).astype(dtype) < np.asarray(p, dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"n={n} {np.dtype(dtype)} p={p}")
                # the same as thresholding the uniforms of the same stream
                _at(backend, seed, offset)
                np.testing.assert_array_equal(got, _host(backend, backend.random_uniform((n,), dtype)) < dtype(p))


@pytest.mark.parametrize("seed,offset", STREAMS)
def test_integers_are_bit_identical_to_reference(backend, seed, offset):
    for n in SIZES:
        for low, high in ((0, 10), (-5, 3), (0, 1 << 32), (-(1 << 40), 1 << 40), (-(1 << 62), 1 << 62), (7, 8)):
            _at(backend, seed, offset)
            got = _host(backend, backend.random_integers(low, high, (n,)))
            want = P.randint(seed, offset, n, low, high - low)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want, err_msg=f"n={n} [{low}, {high})")
            assert ((got >= low) & (got < high)).all()
            assert backend.rng_state()["offset"] == (offset + P.randint_blocks(n, high - low)) % (1 << 64)


@pytest.mark.parametrize("seed,offset", STREAMS)
def test_permutations_are_bit_identical_to_reference(backend, seed, offset):
    for n in SIZES + [1000]:
        _at(backend, seed, offset)
        got = _host(backend, backend.permutation(n))
        np.testing.assert_array_equal(got, P.randperm(seed, offset, n))
        np.testing.assert_array_equal(np.sort(got), np.arange(n))


# float64: |ours - reference| <= 4 ulp of max(|z|, 1) (log, cos, sin each within an ulp or two,
# scaled by r); float32: at most one float32 ulp apart (the float64 values round to neighbours
# only when they straddle a rounding boundary). Seen on CPU: numba bit-identical to NumPy.
@pytest.mark.parametrize("seed,offset", STREAMS)
def test_normals_match_reference_to_an_ulp(backend, seed, offset):
    for n in SIZES:
        _at(backend, seed, offset)
        got = _host(backend, backend.random_normal((n,), np.float64))
        want = P.normal(seed, offset, n, np.float64)
        assert (np.abs(got - want) <= 4 * np.finfo(np.float64).eps * np.maximum(np.abs(want), 1)).all()
        _at(backend, seed, offset)
        got32 = _host(backend, backend.random_normal((n,), np.float32))
        want32 = P.normal(seed, offset, n, np.float32)
        assert got32.dtype == np.float32
        assert (np.abs(got32.view(np.int32).astype(np.int64) - want32.view(np.int32)) <= 1).all()
        assert backend.rng_state()["offset"] == (offset + P.normal_blocks(n)) % (1 << 64)
    for dtype in _low_precision():  # rounded once from float64: within half an ulp, 2**-11 or 2**-8 relative
        _at(backend, seed, offset)
        got = _host(backend, backend.random_normal((7,), dtype)).astype(np.float64)
        want = P.normal(seed, offset, 7, np.float64)
        assert (np.abs(got - want) <= 2.0 ** -(11 if dtype.name == "float16" else 8) * np.abs(want)).all()


def test_shapes_and_dtypes(backend):
    assert backend.random_uniform((2, 3), np.float32).shape == (2, 3)
    assert backend.random_normal(5, np.float64).shape == (5,)
    assert backend.random_integers(0, 4, (2, 2), np.int32).dtype == np.int32
    assert backend.permutation(4, np.int32).dtype == np.int32
    assert backend.random_bernoulli((3, 1), 0.5, np.float32).shape == (3, 1)


# --- the stream -------------------------------------------------------------------------------

def test_two_draws_continue_one_draw(backend):
    """Draws that use whole blocks (n a multiple of the elements per block) tile the stream."""
    draws = [lambda b, n: b.random_uniform(n, np.float32), lambda b, n: b.random_uniform(n, np.float64),
             lambda b, n: b.random_integers(-3, 1000, n), lambda b, n: b.random_integers(0, 1 << 50, n),
             lambda b, n: b.random_bernoulli(n, 0.25, np.float32)]
    for draw in draws:
        backend.manual_seed(11)
        one = _host(backend, draw(backend, 24))
        backend.manual_seed(11)
        two = np.concatenate([_host(backend, draw(backend, 12)), _host(backend, draw(backend, 12))])
        np.testing.assert_array_equal(one, two)
    # a partial block is not reused: the next draw starts at the next block
    backend.manual_seed(11)
    backend.random_uniform(5, np.float32)
    assert backend.rng_state()["offset"] == 2


def test_saved_state_reproduces_next_draw(backend):
    backend.manual_seed(3)
    backend.random_normal(9, np.float32)
    state = json.loads(json.dumps(backend.rng_state()))  # JSON-able
    first = [_host(backend, backend.random_uniform(10, np.float32)), _host(backend, backend.permutation(10)),
             _host(backend, backend.random_integers(0, 9, 10))]
    backend.manual_seed(99)
    backend.set_rng_state(state)
    again = [_host(backend, backend.random_uniform(10, np.float32)), _host(backend, backend.permutation(10)),
             _host(backend, backend.random_integers(0, 9, 10))]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_numbers_across_backends():
    """bg.manual_seed seeds every backend alike: each available backend draws the reference's numbers."""
    bg.manual_seed(2024)
    for name in bg.available_backends():
        b = bg.get_backend(name)
        np.testing.assert_array_equal(_host(b, b.random_uniform(64, np.float32)), P.uniform(2024, 0, 64), name)
    bg.manual_seed(2024)
    np.testing.assert_array_equal(bg.rand(64, dtype=np.float32).numpy(), P.uniform(2024, 0, 64))
    np.testing.assert_array_equal(bg.randperm(50).numpy(), P.randperm(2024, P.uniform_blocks(64, 24), 50))
    np.testing.assert_array_equal(bg.randint(-4, 4, (9,)).numpy(),
                                  P.randint(2024, P.uniform_blocks(64, 24) + P.perm_blocks(50), 9, -4, 8))


BAD_STATES = {
    "numpy PCG64": ({"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}, "has_uint32": 0, "uinteger": 0},
                    "NumPy PCG64 generator state, saved before the backends drew from philox4x32-10"),
    "a list": ([0, 1], "a list, not a Philox generator state"),
    "missing offset": ({"generator": rng.NAME, "seed": 1}, r"entries \['generator', 'seed'\]"),
    "other generator": ({"generator": "mt19937", "seed": 1, "offset": 0}, "generator 'mt19937'"),
    "negative offset": ({"generator": rng.NAME, "seed": 1, "offset": -1}, "offset -1 is not an integer"),
    "seed too large": ({"generator": rng.NAME, "seed": 1 << 64, "offset": 0}, "seed 18446744073709551616"),
    "fractional seed": ({"generator": rng.NAME, "seed": 1.5, "offset": 0}, "seed 1.5"),
    "bool offset": ({"generator": rng.NAME, "seed": 1, "offset": True}, "offset True"),
}


@pytest.mark.parametrize("case", BAD_STATES)
def test_bad_states_are_refused_and_change_nothing(case):
    state, message = BAD_STATES[case]
    b = bg.get_backend("numpy")
    b.manual_seed(5)
    b.random_uniform(3, np.float32)
    before = b.rng_state()
    with pytest.raises(ValueError, match=message):
        b.set_rng_state(state)
    assert b.rng_state() == before


def test_seeds_follow_torch_range_and_mapping():
    b = bg.get_backend("numpy")
    b.manual_seed(-1)  # torch: 0xffff_ffff_ffff_ffff + seed
    assert b.rng_state()["seed"] == 0xFFFF_FFFF_FFFF_FFFE
    b.manual_seed(0xFFFF_FFFF_FFFF_FFFF)
    assert b.rng_state()["seed"] == 0xFFFF_FFFF_FFFF_FFFF
    with pytest.raises(ValueError, match="seed must be within"):
        b.manual_seed(1 << 64)
    with pytest.raises(ValueError, match="seed must be within"):
        b.manual_seed(-(1 << 63) - 1)
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        b.manual_seed(1.0)
    bg.manual_seed(8)
    with pytest.raises(ValueError, match="seed must be within"):  # refused before any backend is seeded
        bg.manual_seed(-(1 << 64))
    assert b.rng_state() == {"generator": rng.NAME, "seed": 8, "offset": 0}


def test_bad_arguments_name_the_problem():
    b = bg.get_backend("numpy")
    with pytest.raises(TypeError, match="random_uniform: dtype int32 is not a floating dtype"):
        b.random_uniform(3, np.int32)
    with pytest.raises(TypeError, match="random_normal: dtype int64"):
        b.random_normal(3, np.int64)
    with pytest.raises(ValueError, match=r"random_bernoulli: p must be in \[0, 1\], got 1.5"):
        b.random_bernoulli(3, 1.5, np.float32)
    with pytest.raises(ValueError, match=r"high - low must be in \[1, 2\*\*63\]"):
        b.random_integers(-(1 << 63), 1 << 63, 3)
    with pytest.raises(ValueError, match=r"high - low must be in \[1, 2\*\*63\]"):
        b.random_integers(3, 3, 3)
    with pytest.raises(ValueError, match="permutation: n must be non-negative, got -1"):
        b.permutation(-1)


# --- distributions ----------------------------------------------------------------------------

N_BIG = 1 << 20


@pytest.fixture(params=["numpy", "numba"])
def cpu_backend(request):
    why = backend_availability(request.param)
    if why:
        pytest.skip(why)
    b = bg.get_backend(request.param)
    b.manual_seed(12345)
    return b


def test_uniform_range_and_moments(cpu_backend):
    for dtype in (np.float32, np.float64):
        u = cpu_backend.random_uniform(N_BIG, dtype).astype(np.float64)
        assert u.min() >= 0 and u.max() < 1
        # mean 1/2, variance 1/12: within 5 standard errors (sd of the mean sqrt(1/12/n) = 2.8e-4;
        # of the sample variance sqrt(1/180/n) = 7.3e-5)
        assert abs(u.mean() - 0.5) < 5 * (1 / 12 / N_BIG) ** 0.5
        assert abs(u.var() - 1 / 12) < 5 * (1 / 180 / N_BIG) ** 0.5
    # the largest value the float32 map can give is below 1, and so is the float64 map's
    assert np.float32((0xFFFFFFFF >> 8)) * np.float32(2.0 ** -24) < 1
    assert P._u53(np.uint32(0xFFFFFFFF), np.uint32(0xFFFFFFFF)) < 1


def test_normal_moments(cpu_backend):
    z = cpu_backend.random_normal(N_BIG, np.float64)
    # 5 standard errors: mean sqrt(1/n) = 9.8e-4, variance sqrt(2/n) = 1.4e-3, kurtosis 3 ~ sqrt(96/n)
    assert abs(z.mean()) < 5 / N_BIG ** 0.5
    assert abs(z.var() - 1) < 5 * (2 / N_BIG) ** 0.5
    assert abs((z ** 4).mean() - 3) < 5 * (96 / N_BIG) ** 0.5
    # the tails: P(|z| > 3) = 0.0027, within 5 binomial standard errors
    p3 = 0.0026997960632601866
    assert abs((np.abs(z) > 3).mean() - p3) < 5 * (p3 * (1 - p3) / N_BIG) ** 0.5


def test_integer_and_bernoulli_frequencies(cpu_backend):
    k = cpu_backend.random_integers(-3, 7, N_BIG)
    counts = np.bincount(k + 3, minlength=10)
    # each of the 10 values: n/10, within 5 binomial standard errors (sqrt(n * 0.1 * 0.9) = 307)
    assert (np.abs(counts - N_BIG / 10) < 5 * (N_BIG * 0.09) ** 0.5).all(), counts
    for p in (0.1, 0.5):
        m = cpu_backend.random_bernoulli(N_BIG, p, np.float32)
        assert abs(m.mean() - p) < 5 * (p * (1 - p) / N_BIG) ** 0.5
    # permutations: each position's value is uniform; over 2000 draws of randperm(4), position 0
    # holds each value 500 times within 5 standard errors (sqrt(2000 * 3/16) = 19.4)
    first = np.array([int(cpu_backend.permutation(4)[0]) for _ in range(2000)])
    assert (np.abs(np.bincount(first, minlength=4) - 500) < 5 * (2000 * 3 / 16) ** 0.5).all()


# --- the CUDA C: NVRTC and the host build -----------------------------------------------------

def test_cuda_source_compiles_with_nvrtc_and_has_every_entry():
    from test_cuda_source import _nvrtc, nvrtc_ptx  # the optimizer kernels' NVRTC check, CuPy's options

    ptx = nvrtc_ptx(_nvrtc(), cuda_source.SOURCE, "philox.cu")
    for name in cuda_source.KERNEL_NAMES:
        kind = "normal" if name.startswith("philox_normal") else name[len("philox_"):]
        n_params = 5 + len(scalar.EXTRA[kind])  # out, n, k0, k1, offset, extra
        assert f".visible .entry {name}(" in ptx, name
        assert len(re.findall(rf"\.param \.\w+ {name}_param_\d+", ptx)) == n_params, name
    # the fused dropout: (x, y, keep, n, k0, k1, offset, the Bernoulli draw's extra, scale); (g, keep, res, n, scale)
    for dtype, (fwd, bwd) in cuda_source.DROPOUT_NAMES.items():
        n_fwd = 7 + len(scalar.EXTRA["bernoulli32" if dtype == "float32" else "bernoulli64"]) + 1
        for name, n_params in ((fwd, n_fwd), (bwd, 5)):
            assert len(re.findall(rf"\.param \.\w+ {name}_param_\d+", ptx)) == n_params, name
            if dtype == "float32":  # float32 data, a 24-bit uniform: no double anywhere
                assert ".f64" not in ptx.split(f".entry {name}(")[1].split(".entry")[0], name
    # bias + ReLU + dropout: (y, b, n, cols, with_bias, k0, k1, offset, the Bernoulli draw's extra, scale)
    for dtype, name in cuda_source.BIAS_RELU_DROPOUT_NAMES.items():
        n_params = 8 + len(scalar.EXTRA["bernoulli32" if dtype == "float32" else "bernoulli64"]) + 1
        assert len(re.findall(rf"\.param \.\w+ {name}_param_\d+", ptx)) == n_params, name
        if dtype == "float32":
            assert ".f64" not in ptx.split(f".entry {name}(")[1].split(".entry")[0], name


_C = {"u64": ctypes.c_uint64, "i64": ctypes.c_int64, "f32": ctypes.c_float, "f64": ctypes.c_double}
_EXTRA_C = {"shift": "u64", "scale": "f32", "low": "i64", "span": "u64"}


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    from helpers import compile_host_c

    lib = compile_host_c(tmp_path_factory.mktemp("philox_c"), cuda_source.host_source())

    def call(kind, out, seed, offset, *extra):
        name = cuda_source.kernel_name(kind, out.dtype.name if kind == "normal" else None)
        f = getattr(lib, name)
        types = [_EXTRA_C.get(a, "f64" if kind == "bernoulli64" else "f32") for a in scalar.EXTRA[kind]]
        f.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64] + \
            [_C[t] for t in types]
        f.restype = None
        k0, k1 = P.key_of(seed)
        f(out.ctypes.data, out.size, k0, k1, offset, *extra)
        return out
    return call


@pytest.mark.parametrize("seed,offset", STREAMS)
def test_host_c_build_is_bit_equal_to_reference(host_lib, seed, offset):
    for n in (1, 5, 8, 1001):
        for bits in (24, 11, 8):
            got = host_lib("uniform32", np.empty(n, np.float32), seed, offset, 32 - bits, 2.0 ** -bits)
            np.testing.assert_array_equal(got, P.uniform(seed, offset, n, bits))
        np.testing.assert_array_equal(host_lib("uniform64", np.empty(n), seed, offset), P.uniform(seed, offset, n, 53))
        got = host_lib("bernoulli32", np.empty(n, np.uint8), seed, offset, 8, 2.0 ** -24, 0.3)
        np.testing.assert_array_equal(got.view(bool), P.bernoulli(seed, offset, n, np.float32(0.3)))
        got = host_lib("bernoulli64", np.empty(n, np.uint8), seed, offset, 0.3)
        np.testing.assert_array_equal(got.view(bool), P.bernoulli(seed, offset, n, 0.3, 53))
        for low, span in ((-5, 10), (0, 1 << 32), (-(1 << 40), 1 << 41), (0, 1 << 63)):
            kind = "randint32" if span <= 1 << 32 else "randint64"
            got = host_lib(kind, np.empty(n, np.int64), seed, offset, low, span)
            np.testing.assert_array_equal(got, P.randint(seed, offset, n, low, span))
        got = host_lib("perm_keys", np.empty(n, np.uint64), seed, offset, P.perm_shift(n))
        np.testing.assert_array_equal(got, P.perm_keys(seed, offset, n))
        # normals: the host libm against NumPy's, as on the backends
        got = host_lib("normal", np.empty(n), seed, offset)
        want = P.normal(seed, offset, n, np.float64)
        assert (np.abs(got - want) <= 4 * np.finfo(np.float64).eps * np.maximum(np.abs(want), 1)).all()
        got32 = host_lib("normal", np.empty(n, np.float32), seed, offset)
        assert (np.abs(got32.view(np.int32) - P.normal(seed, offset, n, np.float32).view(np.int32)) <= 1).all()


# --- the Numba CUDA kernels for real CUDA, and the cupy target without a GPU ------------------

_PTX_SCRIPT = """
import re
from backprop_gpu.array.rng import numba_cuda
outs = {"uniform32": "float32", "uniform64": "float64", "normal": "float32", "bernoulli32": "uint8",
        "bernoulli64": "uint8", "randint32": "int64", "randint64": "int64", "perm_keys": "uint64"}
done = 0
for kind, dtype in outs.items():
    ptx = numba_cuda.compile_ptx_check(kind, dtype)
    assert ".visible .entry" in ptx, kind
    if kind in ("uniform32", "bernoulli32", "randint32", "randint64", "perm_keys"):
        assert not re.search(r"\\.f64\\b", ptx), kind  # integer and float32 work only
    done += 1
print(done)
"""


def _nvrtc_reason():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
        return None
    except Exception as e:
        return f"NVRTC is not available (pip install 'numba-cuda[cu13]'): {e}"


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=str(_nvrtc_reason()))
def test_numba_cuda_kernels_compile_to_ptx():
    """Type-check every draw's kernel for real CUDA (the simulator never does), in a process without
    the simulator, since this one may have it switched on."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == len(scalar.PER_BLOCK)


def test_backends_draw_with_their_providers_kernels(backend):
    assert backend.generator.target == backend.kernels.optim_target
    assert rng.implementation(backend.generator.target).__name__.endswith(
        rng.TARGETS[backend.kernels.optim_target].lstrip("."))


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_cupy_target_without_gpu_raises_clearly():
    from backprop_gpu.array.rng import cupy_impl

    with pytest.raises(RuntimeError, match="CuPy|GPU"):
        cupy_impl.run("uniform32", np.empty(4, np.float32), *(np.uint64(0),) * 3, np.uint64(8), np.float32(1))


def test_cupy_backend_draws_on_the_device_under_the_recording_stand_in(monkeypatch, tmp_path):
    """The cupy backend's own path (``rng.cupy_impl`` launching the RawModule of ``cuda_source``),
    run through the recording CuPy stand-in (``tests/recording_cupy.py``: the CUDA C built for the
    host): the reference's numbers bit for bit, each draw one launch (a permutation adds its argsort),
    no device-to-host sync and no host-to-device copy."""
    import recording_cupy

    rec, b = recording_cupy.install(monkeypatch, tmp_path)
    b.manual_seed(77)
    with rec.count() as c:
        draws = [b.random_uniform(1001, np.float32), b.random_uniform(9, np.float64), b.random_normal(10, np.float32),
                 b.random_bernoulli(13, 0.4, np.float32), b.random_integers(-9, 9, 11), b.permutation(21)]
    assert (c.syncs, c.h2d) == (0, 0), c.table()
    assert c.launches == len(draws) + 1, c.table()  # and the permutation's argsort
    off = 0
    want = []
    for n, blocks, ref in [(1001, P.uniform_blocks(1001, 24), lambda o: P.uniform(77, o, 1001)),
                           (9, P.uniform_blocks(9, 53), lambda o: P.uniform(77, o, 9, 53)),
                           (10, P.normal_blocks(10), lambda o: P.normal(77, o, 10)),
                           (13, P.uniform_blocks(13, 24), lambda o: P.bernoulli(77, o, 13, np.float32(0.4))),
                           (11, P.randint_blocks(11, 18), lambda o: P.randint(77, o, 11, -9, 18)),
                           (21, P.perm_blocks(21), lambda o: P.randperm(77, o, 21))]:
        want.append(ref(off))
        off += blocks
    for k, (got, ref) in enumerate(zip(draws, want)):
        got = recording_cupy.to_host(got)
        if k == 2:  # normals: the host libm's log/cos/sin against NumPy's
            assert (np.abs(got.view(np.int32) - ref.view(np.int32)) <= 1).all()
        else:
            np.testing.assert_array_equal(got, ref, err_msg=f"draw {k}")
    assert b.rng_state()["offset"] == off
