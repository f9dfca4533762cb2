"""Optimizer parameter dtypes: float16 and bfloat16 stepped in float32, big-endian converted, others refused.

* The float16/bfloat16 codecs (``precision.codecs``, compiled by Numba, and their C twin
  ``cuda_source.CODEC_C``) against NumPy's and ml_dtypes' casts, bit for bit: every 16-bit
  pattern decoded, and float32 values (random bit patterns, every representable value, every
  rounding tie and its neighbours) encoded.
* Every optimizer (every variant table row of test_optim_kernels) on every backend, on float16
  and bfloat16 parameters: the same bits as the float32 rule on float32 states and float32 master
  weights, the parameter the master rounded after each step, which is the contract; and against
  torch.optim run in float32 and rounded at the end, and torch's fused float16/bfloat16 kernels.
  A 16-bit value changed outside the step wins over its master weight; the master resumes exactly.
* Big-endian parameters are converted to native order when the flat buffers are built.
* Integer, complex and bool parameters are a TypeError at construction, naming the parameter
  and its dtype, with nothing rebound.
* The generated CUDA C for float16/bfloat16 (compiled for the host and run; compiled with NVRTC,
  which is a compile check only), and the Numba CUDA kernels' PTX.
"""
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import backprop_gpu as bg
from backprop_gpu import optim
from backprop_gpu.array.optim import cuda_source, get_kernel, rules

from helpers import compile_host_c
from test_optim_kernels import VARIANTS, group_for

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
LOW = [pytest.param(F16, id="float16"), pytest.param(BF16, id="bfloat16")]
# each optimizer with its last variant-table row (momentum, weight decay, amsgrad, centered, maximize ...)
# and its first (the defaults)
OPT_CASES = [(name, i) for name, vs in VARIANTS.items() for i in sorted({0, len(vs) - 1})]
OPT_IDS = [f"{n}-{i}" for n, i in OPT_CASES]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def _unit(x):
    """One unit in the last place of each element of the float16/bfloat16 array ``x``, as float32."""
    x32 = np.abs(x.astype(np.float32))
    if x.dtype == F16:
        with np.errstate(invalid="ignore"):
            return np.abs(np.spacing(x.astype(F16)).astype(np.float32))
    return np.maximum(x32 * 2.0 ** -7, np.float32(2.0 ** -133))  # within a factor 2: bfloat16 has 8 bits


def _same_bits_or_both_nan(a, b):
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return (_bits(np.asarray(a)) == _bits(np.asarray(b))) | (np.isnan(a32) & np.isnan(b32))


# --- the codecs ------------------------------------------------------------------------------

def _encode_cases(dtype):
    """float32 values: random bit patterns, every finite value of ``dtype``, the midpoints between
    neighbours (the ties) and the float32 values either side of each, range edges; both signs."""
    rng = np.random.default_rng(5)
    rand = rng.integers(0, 2 ** 32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32)
    vals = np.arange(65536, dtype=np.uint16).view(dtype).astype(np.float32)
    vals = np.unique(vals[np.isfinite(vals)].astype(np.float64))
    mids = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)  # exact in float32 for both dtypes
    inf = np.float32(np.inf)
    edges = np.float32([65504, 65519.996, 65520, 65536, 3.4e38, np.inf, 1e-8, 2.0 ** -25, 2.0 ** -24, 1e-45,
                        np.finfo(np.float32).max, np.nan])
    x = np.concatenate([rand, vals.astype(np.float32), mids, np.nextafter(mids, inf), np.nextafter(mids, -inf), edges])
    return np.concatenate([x, -x]).astype(np.float32)


@pytest.fixture(scope="module")
def numba_codecs():
    import numba

    from backprop_gpu.array.optim import numba_cpu

    out = {}
    for name, (load, store) in numba_cpu._codecs().items():
        @numba.njit
        def dec(h, o, load=load):
            for i in range(h.shape[0]):
                o[i] = load(h[i])

        @numba.njit
        def enc(x, o, store=store):
            for i in range(x.shape[0]):
                o[i] = store(x[i])
        out[name] = dec, enc
    return out


@pytest.mark.parametrize("dtype", LOW)
def test_numba_codecs_match_numpy_and_ml_dtypes_bit_for_bit(numba_codecs, dtype):
    dec, enc = numba_codecs[dtype.name]
    every = np.arange(65536, dtype=np.uint16)
    got = np.empty(65536, np.float32)
    dec(every, got)
    assert _same_bits_or_both_nan(got, every.view(dtype).astype(np.float32)).all()
    x = _encode_cases(dtype)
    got = np.empty(x.size, np.uint16)
    enc(x, got)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(dtype)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(got[finite], _bits(ref)[finite])
    assert np.isnan(got.view(dtype).astype(np.float32)[~finite]).all()  # NaN stays NaN, of its sign
    assert (got[~finite] >> 15 == _bits(ref)[~finite] >> 15).all()


@pytest.mark.parametrize("dtype", LOW)
def test_python_codecs_match_on_a_sample(dtype):
    """The same functions as plain Python on NumPy scalars (what the CUDA simulator runs)."""
    from backprop_gpu.array.optim import precision

    load, store = precision.codecs(precision.numpy_as_float, precision.numpy_as_bits)[dtype.name]
    h = np.random.default_rng(2).integers(0, 65536, 2000).astype(np.uint16)
    got = np.array([load(v) for v in h], np.float32)
    assert _same_bits_or_both_nan(got, h.view(dtype).astype(np.float32)).all()
    x = _encode_cases(dtype)[::97]
    got = np.array([store(v) for v in x], np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        assert _same_bits_or_both_nan(got.view(dtype), x.astype(dtype)).all()


# --- stepping float16 / bfloat16 parameters through the optimizers -------------------------

def _start(dtype, n=40, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    p0[0] = 0  # a zero parameter with a zero gradient: Adam computed in float16 made it NaN (0 / (0 + 0))
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(4)]
    for g in grads:
        g[0] = 0
    return p0, grads


def _reference(name, group, p0, grads):
    """The contract: the float32 rule (NumPy reference) on float32 states and float32 master weights
    (``master_param``), p the master rounded to its dtype."""
    rule = rules.get(name)
    flags = rule.flags(group)
    k = get_kernel("numpy", name, flags, np.float32)
    p32 = p0.astype(np.float32)
    states = tuple(np.full(p32.shape, fill, np.float32) for _, fill in rule.state_init(flags, group))
    for step, g in enumerate(grads, start=1):
        k(p32, g.astype(np.float32), states, rule.hypers(group, step, flags))
    return p32.astype(p0.dtype), {**dict(zip(rule.state_names(flags), states)), "master_param": p32}


def _group(name, variant):
    """The variant's group, with a learning rate that moves bfloat16 parameters (Adadelta's first steps
    are ~sqrt(eps) * lr, below bfloat16's resolution at lr=0.01)."""
    return group_for(name, variant, lr=1.0 if name == "adadelta" else 0.01)


def _ours(backend, name, variant, p0, grads):
    p = bg.tensor(p0.copy(), device=backend)  # bfloat16 cannot require grad: gradients are given by hand
    opt = optim.OPTIMIZERS[name]([p], **_group(name, variant))
    for g in grads:
        p.grad = bg.tensor(g.copy(), device=backend)
        opt.step()
    return p, opt


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name,variant", OPT_CASES, ids=OPT_IDS)
def test_low_precision_step_is_the_float32_step_on_master_weights(backend, name, variant, dtype):
    p0, grads = _start(dtype)
    p, opt = _ours(backend, name, variant, p0, grads)
    ref_p, ref_states = _reference(name, _group(name, variant), p0, grads)
    assert p.dtype == dtype and p.grad.dtype == dtype
    st = opt.state_dict()["state"][0]
    assert set(st) == {"step", *ref_states}
    got = p.numpy()
    assert np.isfinite(got.astype(np.float32)).all()
    assert np.any(got != p0)  # the steps moved p, so the comparison below is not of two starting points
    for k, ref in ref_states.items():
        assert st[k].dtype == np.float32, k  # the moments and the master weights stay float32
    if backend.name in ("numpy", "numba"):  # the same float32 operations, no FMA contraction: the same bits
        np.testing.assert_array_equal(_bits(got), _bits(ref_p))
        for k, ref in ref_states.items():
            np.testing.assert_array_equal(st[k].numpy(), ref, err_msg=k)
        return
    # the CUDA simulator takes math.sqrt in float64; NVRTC contracts into FMAs: a float32 ulp or so
    # in the states, which may flip a rounding of p by one unit of the 16-bit dtype
    assert (np.abs(got.astype(np.float32) - ref_p.astype(np.float32)) <= _unit(ref_p)).all()
    for k, ref in ref_states.items():
        np.testing.assert_allclose(st[k].numpy(), ref, rtol=1e-5, atol=1e-30, err_msg=k)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name,variant", [("adam", 1), ("sgd", 1)])
def test_low_precision_capturable_step_is_the_host_scalar_step(backend, name, variant, dtype):
    """The device-scalar form on 16-bit parameters: the same bits as the host-scalar steps."""
    p0, grads = _start(dtype)
    runs = []
    for capturable in (False, True):
        p = bg.tensor(p0.copy(), device=backend)
        opt = optim.OPTIMIZERS[name]([p], capturable=capturable, **_group(name, variant))
        for g in grads:
            p.grad = bg.tensor(g.copy(), device=backend)
            opt.step()
        runs.append(_bits(p.numpy()))
    assert np.any(runs[1] != _bits(p0))
    np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_masked_step_skips_parameters_without_gradient(backend, dtype):
    p0, grads = _start(dtype)
    a, b = bg.tensor(p0.copy(), device=backend), bg.tensor(p0[:7].copy(), device=backend)
    opt = optim.Adam([a, b], lr=0.01)
    for g in grads:
        a.grad, b.grad = bg.tensor(g.copy(), device=backend), None  # b has no gradient: the masked kernel
        opt.step()
    ref_p, _ = _reference("adam", group_for("adam", 0), p0, grads)
    np.testing.assert_array_equal(_bits(b.numpy()), _bits(p0[:7]))
    if backend.name != "cupy":
        np.testing.assert_array_equal(_bits(a.numpy()), _bits(ref_p))


def test_float16_adam_after_backward_stays_finite(backend):
    """The report: float16 Adam crashed inside Numba (NotImplementedError: float16); on NumPy,
    computed in float16, eps=1e-8 underflowed and a parameter with zero gradient became NaN."""
    p = bg.tensor(np.arange(4, dtype=np.float16), device=backend, requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    got = p.numpy()
    assert got.dtype == F16 and np.isfinite(got).all() and got[0] == 0 and np.all(got[1:] < np.arange(1, 4))


# --- against torch --------------------------------------------------------------------------

def _torch_opt(torch, name, params, group, **extra):
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
           "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    import inspect

    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "params", "foreach", "fused"}
    return cls(params, **{k: v for k, v in group.items() if k in keys}, **extra)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name,variant", OPT_CASES, ids=OPT_IDS)
def test_matches_torch_run_in_float32_and_rounded(backend, name, variant, dtype):
    """torch.optim (single-tensor path) on a float32 parameter with float32 state, rounded to
    float16/bfloat16 at the end: what master weights promise. Within one unit of the 16-bit dtype
    (torch's vectorised float32 kernels may round differently in the last float32 bit)."""
    torch = pytest.importorskip("torch")
    tdt = {F16: torch.float16, BF16: torch.bfloat16}[dtype]
    p0, grads = _start(dtype, n=64, seed=3)
    group = _group(name, variant)
    tp = torch.nn.Parameter(torch.from_numpy(p0.astype(np.float32)))
    topt = _torch_opt(torch, name, [tp], group, foreach=False)
    for g in grads:
        tp.grad = torch.from_numpy(g.astype(np.float32))
        topt.step()
    theirs = tp.detach().numpy().astype(dtype).astype(np.float32)
    ours = _ours(backend, name, variant, p0, grads)[0].numpy().astype(np.float32)
    assert (np.abs(ours - theirs) <= _unit(theirs.astype(dtype))).all()
    assert np.mean(ours == theirs) >= 0.9  # almost all bit-identical


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name,kwargs,mode", [("adam", {}, "fused"), ("adamw", dict(weight_decay=0.1), "fused"),
                                              ("adagrad", {}, "fused"), ("sgd", dict(momentum=0.9), "foreach")])
def test_close_to_torch_on_half_tensors(backend, name, kwargs, mode, dtype):
    """torch on native float16/bfloat16 tensors: its fused CPU kernels compute in float32 too, but keep
    their state and weights in the 16-bit dtype; over 5 steps the parameters agree within two units,
    and ours (float32 master weights and state) are closer to torch's float32 run. (SGD runs torch's
    single-tensor path: torch 2.13's fused CPU SGD leaves float16/bfloat16 parameters of 16 or more
    elements unchanged.)"""
    torch = pytest.importorskip("torch")
    tdt = {F16: torch.float16, BF16: torch.bfloat16}[dtype]
    p0, grads = _start(dtype, n=64, seed=4)
    grads = grads + grads[:1]
    tp = torch.nn.Parameter(torch.from_numpy(p0.astype(np.float32)).to(tdt))  # exact
    assert np.array_equal(tp.detach().float().numpy(), p0.astype(np.float32))
    topt = _torch_opt(torch, name, [tp], dict(lr=0.01, **kwargs), **{"fused": True} if mode == "fused" else
                      {"foreach": False})
    p = bg.tensor(p0.copy(), device=backend)
    opt = optim.OPTIMIZERS[name]([p], lr=0.01, **kwargs)
    for g in grads:
        tp.grad = torch.from_numpy(g.astype(np.float32)).to(tdt)
        topt.step()
        p.grad = bg.tensor(g.copy(), device=backend)
        opt.step()
    theirs = tp.detach().float().numpy()
    ours = p.numpy().astype(np.float32)
    assert np.isfinite(ours).all()
    # torch's fused float16 Adagrad turns the parameter with zero gradient into NaN (eps=1e-10 is 0 in
    # float16): compared where torch stays finite
    ok = np.isfinite(theirs)
    assert ok[1:].all()
    t32 = torch.nn.Parameter(torch.from_numpy(p0.astype(np.float32)))
    topt32 = _torch_opt(torch, name, [t32], dict(lr=0.01, **kwargs), foreach=False)
    for g in grads:
        t32.grad = torch.from_numpy(g.astype(np.float32))
        topt32.step()
    exact = t32.detach().numpy()[ok]
    theirs, ours, moved = theirs[ok], ours[ok], np.abs(theirs[ok] - p0[ok].astype(np.float32))
    # two units of p, or near zero (where units are tiny) the error of torch's 16-bit state: a relative
    # 2**-8 (bfloat16; float16 2**-11) of the distance moved, twice over, and of one step of ~lr; and the
    # error of torch's 16-bit weights, which ours (rounded from float32 master weights) do not have
    err = np.abs(ours - theirs) - 2 * _unit(theirs.astype(dtype)) - 2.0 ** -7 * moved - 2.0 ** -8 * 0.01 \
        - np.abs(theirs - exact)
    assert err.max() <= 0, (err.max(), int(err.argmax()))
    assert np.abs(ours - exact).mean() < np.abs(theirs - exact).mean()


_CACHE_SCRIPT = """
import numpy as np, ml_dtypes
from backprop_gpu.array.optim import get_kernel
hits = []
for dt in (np.float16, ml_dtypes.bfloat16):
    k = get_kernel("numba", "sgd", (True, False, False, False), dt)
    p, g, b, w = np.ones(10, dt), np.ones(10, dt), np.zeros(10, np.float32), np.ones(10, np.float32)
    k(p, g, (b, w), (0.5, 0.0, 0.9, 1.0, 1.0))
    assert p.astype(np.float32).tolist() == [0.5] * 10, p
    hits.append(sum(k.dispatcher.stats.cache_hits.values()))
print(*hits)
"""


def test_numba_low_precision_loops_are_cached_on_disk_one_file_per_dtype(tmp_path):
    """float16 and bfloat16 loops call different codecs on the same uint16 signature: each has its own
    generated file (a shared one would hand one dtype the other's cached machine code)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert [r.stdout.split() for r in runs] == [["0", "0"], ["1", "1"]]
    names = sorted(f.name.rsplit("_", 1)[0] for f in (tmp_path / "backprop_gpu_fused").glob("sgd_1000*.py"))
    assert names == ["sgd_1000_bfloat16", "sgd_1000_float16"]


@pytest.mark.parametrize("dtype", LOW)
def test_master_weights_keep_steps_below_the_16_bit_resolution(backend, dtype):
    """SGD steps of a tenth of a unit of the 16-bit dtype: rounding each step back into 16 bits would
    leave the weights where they are; the master weights add them up, in the one launch per step."""
    p0 = np.array([1.0, -2.0, 0.5, 3.0], dtype)
    unit = _unit(p0).astype(np.float32)
    lr = float(unit.min()) / 10
    p = bg.tensor(p0.copy(), device=backend)
    opt = optim.SGD([p], lr=lr)
    launches = backend.launch_count
    for _ in range(100):
        p.grad = bg.tensor(np.ones(4, dtype), device=backend)
        opt.step()
    assert backend.launch_count - launches == 100
    exact = p0.astype(np.float32) - np.float32(100 * lr)
    assert np.all(p.numpy() != p0)
    assert (np.abs(p.numpy().astype(np.float32) - exact) <= unit).all()
    np.testing.assert_allclose(opt.state_dict()["state"][0]["master_param"].numpy(), exact, rtol=1e-5)


@pytest.mark.parametrize("dtype", LOW)
def test_a_16_bit_weight_changed_outside_the_step_wins_over_its_master(backend, dtype):
    """``p.data = ...``, an in-place change under no_grad, a model's load_state_dict: the next step starts
    from the new 16-bit value (where it still is its master's rounding, from the master)."""
    p0, grads = _start(dtype, n=8)
    p = bg.tensor(p0.copy(), device=backend)
    opt = optim.Adam([p], lr=0.01)
    p.grad = bg.tensor(grads[0].copy(), device=backend)
    opt.step()
    with bg.no_grad():
        p[:4] = bg.tensor(np.full(4, 7.0, dtype), device=backend)
    p.grad = bg.tensor(grads[1].copy(), device=backend)
    opt.step()
    got = p.numpy().astype(np.float32)
    assert (np.abs(got[:4] - 7.0) < 0.05).all()  # one Adam step (lr 0.01) from 7, not from the old master
    q = bg.tensor(p0.copy(), device=backend)  # the same run without the change: the other half agrees
    opt_q = optim.Adam([q], lr=0.01)
    for g in grads[:2]:
        q.grad = bg.tensor(g.copy(), device=backend)
        opt_q.step()
    np.testing.assert_array_equal(_bits(p.numpy()[4:]), _bits(q.numpy()[4:]))


@pytest.mark.parametrize("dtype", LOW)
def test_resume_with_master_weights_is_bit_identical(backend, dtype):
    """The master weights are saved (``master_param``, float32) and restored: a resumed run continues
    with the same bits as the uninterrupted one. A state without them (torch's) starts them from the
    parameters."""
    p0, grads = _start(dtype, n=16)
    runs = {}
    for resume in (False, True, "without master"):
        p = bg.tensor(p0.copy(), device=backend)
        opt = optim.AdamW([p], lr=0.01)
        for k, g in enumerate(grads):
            if k == 2 and resume:
                sd = opt.state_dict()
                assert sd["state"][0]["master_param"].dtype == np.float32
                if resume == "without master":
                    del sd["state"][0]["master_param"]
                p = bg.tensor(p.numpy().copy(), device=backend)
                opt = optim.AdamW([p], lr=0.01)
                opt.load_state_dict(sd)
            p.grad = bg.tensor(g.copy(), device=backend)
            opt.step()
        runs[resume] = p.numpy()
    np.testing.assert_array_equal(_bits(runs[True]), _bits(runs[False]))
    assert (np.abs(runs["without master"].astype(np.float32) - runs[False].astype(np.float32))
            <= _unit(runs[False])).all()


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("scaled", [False, True], ids=["host-scalars", "device-scalars"])
def test_cupy_master_weight_step_is_one_launch_and_the_numpy_bits(monkeypatch, tmp_path_factory, dtype, scaled):
    """The cupy backend's 16-bit step through the recording stand-in (its CUDA C built for the host):
    the master weights passed after the states, one launch per step, no sync, and the numpy backend's
    parameters, moments and master weights (in the host and the device-scalar forms)."""
    import recording_cupy

    rec, cupy = recording_cupy.install(monkeypatch, tmp_path_factory.mktemp("rawkernels"))
    p0, grads = _start(dtype, n=24)
    out = {}
    for backend in (cupy, bg.get_backend("numpy")):
        p = bg.tensor(p0.copy(), device=backend)
        opt = optim.Adam([p], lr=0.01, capturable=scaled)
        for k, g in enumerate(grads):
            p.grad = bg.tensor(g.copy(), device=backend)
            if backend is cupy and k == len(grads) - 1:
                with rec.count() as c:
                    opt.step()
                kernels = [w for (kind, _, w), n in c.events.items() if kind == "launch" and "RawKernel" in w]
                assert c.syncs == 0 and len(kernels) == 1, c.table()
            else:
                opt.step()
        st = opt.state_dict()["state"][0]
        out[backend.name] = [_bits(p.numpy())] + [st[k].numpy() for k in ("exp_avg", "exp_avg_sq", "master_param")]
    assert np.any(out["numpy"][0] != _bits(p0))
    for a, b in zip(out["cupy"], out["numpy"]):
        np.testing.assert_array_equal(a, b)


def test_master_weights_belong_to_16_bit_parameters_only():
    """A float32 parameter keeps no master copy; a 16-bit run's ``master_param`` loads into a float32
    optimizer as nothing (the parameter is its own master), and no other unknown state name loads."""
    p = bg.tensor(np.ones(3, np.float32))
    opt = optim.SGD([p], lr=0.1)
    p.grad = bg.ones(3)
    opt.step()
    assert opt.state_dict()["state"] == {0: {"step": 1}}  # plain SGD keeps a count, no master weights
    h = bg.tensor(np.ones(3, np.float16))
    opt_h = optim.SGD([h], lr=0.1, momentum=0.9)
    h.grad = bg.tensor(np.ones(3, np.float16))
    opt_h.step()
    sd = opt_h.state_dict()
    assert set(sd["state"][0]) == {"step", "momentum_buffer", "master_param"}
    opt32 = optim.SGD([p], lr=0.1, momentum=0.9)
    opt32.load_state_dict(sd)
    assert set(opt32.state_dict()["state"][0]) == {"step", "momentum_buffer"}
    sd["state"][0]["master_weights"] = sd["state"][0].pop("master_param")
    with pytest.raises(ValueError, match=r"'master_weights'\]: not a state SGD keeps .*master_param for float16"):
        opt_h.load_state_dict(sd)


@pytest.mark.parametrize("dtype", LOW)
def test_state_dict_round_trip_keeps_float32_moments_exactly(dtype):
    """Saved moments are float32 for 16-bit parameters, and load back into float32 state unrounded."""
    p0, grads = _start(dtype)
    p = bg.tensor(p0.copy())
    opt = optim.Adam([p], lr=0.01)
    for g in grads:
        p.grad = bg.tensor(g.copy())
        opt.step()
    q = bg.tensor(p.numpy().copy())
    opt2 = optim.Adam([q], lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    mine, theirs = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    for k in ("exp_avg", "exp_avg_sq"):
        assert mine[k].dtype == np.float32
        assert not np.array_equal(mine[k].numpy(), mine[k].numpy().astype(dtype).astype(np.float32))  # not 16-bit
        np.testing.assert_array_equal(theirs[k].numpy(), mine[k].numpy(), err_msg=k)


# --- byte order and unsupported dtypes ------------------------------------------------------

def test_big_endian_parameters_are_converted_and_share_the_native_buffer(backend):
    """The report: a '>f4' parameter crashed the numba kernel (TypingError). Flat buffers are native:
    the parameter reads as float32 afterwards, steps as a native one, and shares its buffer."""
    rng = np.random.default_rng(0)
    p0, g0 = rng.standard_normal((2, 6)).astype(np.float32)
    big = bg.tensor(p0.astype(">f4"), device=backend, requires_grad=True)
    assert big.dtype == np.dtype(">f4")
    little = bg.tensor(p0.copy(), device=backend, requires_grad=True)
    ref = bg.tensor(p0.copy(), device=backend, requires_grad=True)
    opt = optim.Adam([big, little], lr=0.1)
    ref_opt = optim.Adam([ref], lr=0.1)
    assert big.dtype == np.dtype("float32") and big.dtype.isnative
    assert len(opt.flat_groups) == 1
    before = backend.launch_count
    for _ in range(3):
        for t in (big, little, ref):
            t.grad = bg.tensor(g0.astype(">f4"), device=backend)
        opt.step()
        ref_opt.step()
    assert backend.launch_count - before == 6  # one launch per optimizer per step
    np.testing.assert_array_equal(big.numpy(), ref.numpy())
    np.testing.assert_array_equal(little.numpy(), ref.numpy())
    big.data = bg.tensor(p0.astype(">f4"), device=backend)  # replaced storage, big-endian again: copied in
    opt.step()
    assert big.dtype.isnative and np.all(np.isfinite(big.numpy()))


@pytest.mark.parametrize("dtype", ["int64", "int32", "complex64", "bool"])
def test_unsupported_parameter_dtype_is_refused_before_anything_changes(backend, dtype):
    good = bg.tensor(np.ones(3, np.float32), device=backend, requires_grad=True)
    bad = bg.tensor(np.ones(2, dtype), device=backend)
    arrays = (good.array, bad.array)
    with pytest.raises(TypeError, match=rf"parameter 1 .*dtype {dtype}"):
        optim.SGD([good, bad], lr=0.1)
    assert (good.array, bad.array) == arrays and good._grad_slot is None  # nothing was rebound
    opt = optim.Adam([good], lr=0.1)
    view = good.array
    with pytest.raises(TypeError, match=rf"parameter 1 \(in param group 1\).*dtype {dtype}"):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1 and len(opt.flat_groups) == 1 and good.array is view


def test_kernels_refuse_other_dtypes_before_building():
    for target in ("numpy", "numba", "numba-cuda", "cupy"):
        for dtype in (np.int32, np.complex64, np.dtype(">f4"), np.dtype(">f2")):
            with pytest.raises(TypeError, match=re.escape(str(np.dtype(dtype)))):
                get_kernel(target, "adam", (False, False, False), dtype)
    with pytest.raises(TypeError, match="int32"):
        cuda_source.kernel_source("adam", (False, False, False), np.int32)
    with pytest.raises(TypeError, match=">f4"):
        cuda_source.kernel_source("adam", (False, False, False), np.dtype(">f4"))


# --- the generated CUDA C for float16 / bfloat16 ----------------------------------------------

ALL = [(name, flags) for name in rules.RULES
       for flags in itertools.product((False, True), repeat=len(rules.get(name).flags(group_for(name, 0))))]
LOW_NAMES = ("float16", "bfloat16")


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    """Every float16/bfloat16 variant's host C (``cuda_source.host_source``) in one shared library."""
    import ctypes

    d = tmp_path_factory.mktemp("host_c_low")
    keys = [(n, f, dt, m) for n, f in ALL for dt in LOW_NAMES for m in (False, True)]
    lib = compile_host_c(d, "\n".join(cuda_source.host_source(*k)[1] for k in keys))
    fns = {}
    for name, flags, dt, masked in keys:
        rule = rules.get(name)
        f = getattr(lib, cuda_source.kernel_name(name, flags, dt, masked))
        f.argtypes = ([ctypes.c_void_p] * (3 + len(rule.state_names(flags))) + [ctypes.c_longlong]  # p, g, states, w
                      + [ctypes.c_float] * len(rule.hyper_names) + [ctypes.c_void_p] * masked)
        f.restype = None
        fns[(name, flags, dt, masked)] = f
    return fns


KNOBS = {"sgd": dict(momentum=(0.0, 0.9), nesterov=(False, True), weight_decay=(0.0, 0.01), maximize=(False, True)),
         "adagrad": dict(weight_decay=(0.0, 0.1), maximize=(False, True)),
         "adadelta": dict(weight_decay=(0.0, 0.1), maximize=(False, True)),
         "rmsprop": dict(momentum=(0.0, 0.5), centered=(False, True), weight_decay=(0.0, 0.1),
                         maximize=(False, True)),
         "adam": dict(amsgrad=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True)),
         "adamw": dict(amsgrad=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True))}


def _make_group(name, flags):
    """A group whose variant is ``flags`` (the kernel exists for each, even SGD's Nesterov without momentum)."""
    g = dict(group_for(name, 0), **{k: v[on] for (k, v), on in zip(KNOBS[name].items(), flags)})
    assert rules.get(name).flags(g) == flags
    return g


@pytest.mark.parametrize("dtype", LOW_NAMES)
@pytest.mark.parametrize("name,flags", ALL, ids=[f"{n}-{''.join('1' if f else '0' for f in fl)}" for n, fl in ALL])
def test_host_build_of_low_precision_cuda_c_matches_numpy(host_lib, name, flags, dtype):
    """The CUDA C body with its codecs, built for the host without FMA contraction: the NumPy
    target's bits (masked and not), master weights included (the first of them stale: the parameter
    changed outside the step, which wins)."""
    dt = np.dtype(dtype) if dtype == "float16" else BF16
    rule = rules.get(name)
    group = _make_group(name, flags)
    rng = np.random.default_rng(1)
    mask = (rng.random(101) < 0.6).astype(np.uint8)
    p0 = rng.standard_normal(101).astype(dt)
    for masked in (False, True):
        ref = get_kernel("numpy", name, flags, dt, masked)
        f = host_lib[(name, flags, dtype, masked)]
        p, rp = p0.copy(), p0.copy()
        st = [np.full(101, fill, np.float32) for _, fill in rule.state_init(flags, group)] + [p0.astype(np.float32)]
        st[-1][0] += 1  # a stale master weight: p[0] is used
        rst = [s.copy() for s in st]
        for step in range(1, 4):
            g = rng.standard_normal(101).astype(dt)
            h = rule.hypers(group, step, flags)
            f(p.ctypes.data, g.ctypes.data, *[s.ctypes.data for s in st], p.size, *h,
              *([mask.ctypes.data] if masked else []))
            ref(rp, g, tuple(rst), h, *([mask] if masked else []))
        np.testing.assert_array_equal(_bits(p), _bits(rp))
        for a, b in zip(st, rst):
            np.testing.assert_array_equal(a, b)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc

        err, *_ = nvrtc.nvrtcVersion()
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(err)
        return nvrtc
    except Exception as e:
        pytest.skip(f"NVRTC cannot be loaded (pip install 'cuda-bindings>=13' 'nvidia-cuda-nvrtc>=13'): {e!r}")


@pytest.mark.parametrize("name", list(rules.RULES))
def test_low_precision_cuda_c_compiles_with_nvrtc(name):
    """Compile check only (no GPU here): every float16/bfloat16 variant under CuPy's NVRTC options,
    with the PTX entry taking the parameters cupy_impl passes and no double arithmetic."""
    nvrtc = _nvrtc()
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    opts = [b"--std=c++14", b"-ftz=true", b"-arch=compute_90"]  # CuPy's RawKernel options, as test_cuda_source
    rule = rules.get(name)
    for (n, flags), dtype, masked in itertools.product([c for c in ALL if c[0] == name], LOW_NAMES, (False, True)):
        kname, src = cuda_source.kernel_source(name, flags, dtype, masked)
        err, prog = nvrtc.nvrtcCreateProgram(src.encode(), f"{kname}.cu".encode(), 0, [], [])
        try:
            err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            assert err == ok, f"{err}\n{log.decode(errors='replace')}\n{src}"
            _, size = nvrtc.nvrtcGetPTXSize(prog)
            ptx = b" " * size
            nvrtc.nvrtcGetPTX(prog, ptx)
            ptx = ptx.rstrip(b"\x00").decode()
        finally:
            nvrtc.nvrtcDestroyProgram(prog)
        assert f".visible .entry {kname}(" in ptx
        n_params = 3 + len(rule.state_names(flags)) + 1 + len(rule.hyper_names) + masked  # p, g, states, w, n
        assert len(re.findall(rf"\.param \.\w+ {kname}_param_\d+", ptx)) == n_params
        assert not re.search(r"\.f64\b", ptx), (flags, dtype)


_PTX_SCRIPT = """
import json, re, sys
from backprop_gpu.array.optim.numba_cuda import compile_ptx_check
done = 0
for name, flags in json.loads(sys.argv[1]):
    for dtype in ("float16", "bfloat16"):
        ptx = compile_ptx_check(name, tuple(flags), __import__("ml_dtypes").bfloat16 if dtype == "bfloat16" else dtype,
                                masked=bool(done % 2))
        assert ".visible .entry" in ptx and not re.search(r"\\.f64\\b", ptx), (name, flags, dtype)
        done += 1
print(done)
"""


def test_numba_cuda_low_precision_kernels_compile_to_ptx():
    """Compile check only: each rule's all-off and all-on variant, float16 and bfloat16, for real CUDA
    (libdevice bit casts; the simulator runs the NumPy ones), in a process without the simulator."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
    except Exception as e:
        pytest.skip(f"NVRTC is not available (pip install 'numba-cuda[cu13]'): {e}")
    cases = [(n, list(f)) for n, f in ALL if not any(f) or all(f)]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, json.dumps(cases)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == 2 * len(cases)
