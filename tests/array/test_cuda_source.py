"""The CUDA C generated from the rules (``backprop_gpu.array.optim.cuda_source``).

* every variant (rule x flag combination x float32/float64) compiles with NVRTC under the
  options CuPy's RawKernel passes, and its PTX entry takes the parameters ``cupy_impl`` passes;
* the same translated body, compiled by the system C compiler for the host, matches the NumPy
  reference over three steps;
* ``cupy_impl`` imports without CuPy being touched and fails clearly without a GPU; on a GPU its
  kernels match the NumPy reference.
"""
import inspect
import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

from backprop_gpu.array.optim import cuda_source, get_kernel, rules
from helpers import compile_host_c, gpu_available

DTYPES = ("float32", "float64")
# host C vs NumPy: both round every operation to the dtype, so these are a few ulps at most
RTOL = {"float32": 1e-6, "float64": 1e-13}


def make_group(name, flags):
    """A param group as the optimizer ``name`` builds it (its constructor's defaults), with each flag's
    hyperparameter set nonzero where the flag is on."""
    from backprop_gpu.optim.optimizers import OPTIMIZERS

    sig = inspect.signature(OPTIMIZERS[name].__init__)
    g = {k: p.default for k, p in sig.parameters.items() if k not in ("self", "params", "foreach", "fused")}
    g["lr"] = 0.01
    if name == "sgd":
        momentum, nesterov, decay, g["maximize"] = flags
        g.update(momentum=0.9 if momentum else 0.0, nesterov=nesterov, dampening=0.0 if nesterov else 0.1,
                 weight_decay=0.01 if decay else 0.0)
    elif name in ("adagrad", "adadelta"):
        decay, g["maximize"] = flags
        g["weight_decay"] = 0.1 if decay else 0.0
        if name == "adagrad":
            g.update(lr_decay=0.01, initial_accumulator_value=0.1)
    elif name == "rmsprop":
        momentum, g["centered"], decay, g["maximize"] = flags
        g.update(momentum=0.9 if momentum else 0.0, weight_decay=0.1 if decay else 0.0)
    else:
        g["amsgrad"], decay, g["maximize"] = flags
        g["weight_decay"] = (0.01 if name == "adamw" else 0.1) if decay else 0.0
    assert rules.get(name).flags(g) == tuple(flags)
    try:
        rules.get(name).validate(g)
    except ValueError:
        # SGD's nesterov without momentum: no optimizer builds it, but the kernel exists, so check it too
        assert name == "sgd" and flags[1] and not flags[0]
    return g


def _n_flags(name):
    from backprop_gpu.optim.optimizers import OPTIMIZERS

    sig = inspect.signature(OPTIMIZERS[name].__init__)
    g = {k: p.default for k, p in sig.parameters.items() if k not in ("self", "params", "foreach", "fused")}
    return len(rules.get(name).flags(g))


ALL = [(name, flags) for name in rules.RULES for flags in itertools.product((False, True), repeat=_n_flags(name))]
ALL_IDS = [f"{n}-{''.join('1' if f else '0' for f in fl)}" for n, fl in ALL]


def run_reference_and(kernel, name, flags, dtype, n=257, steps=3, seed=0):
    """Run ``kernel`` and the NumPy reference side by side from the same random start; yield
    (step, ours, reference) as lists [p, *states] after each step."""
    rule = rules.get(name)
    group = make_group(name, flags)
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    init = [np.full(n, fill, dtype) for _, fill in rule.state_init(flags, group)]
    ref_p, ref_s = p0.copy(), [s.copy() for s in init]
    ours = [p0.copy(), *[s.copy() for s in init]]
    ref = get_kernel("numpy", name, flags, dtype)
    for step in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        hypers = rule.hypers(group, step, flags)
        ref(ref_p, g, tuple(ref_s), hypers)
        kernel(ours, g, hypers)
        yield step, ours, [ref_p, *ref_s]


# --- the generated source --------------------------------------------------------------------

_SIG = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')


@pytest.mark.parametrize("name,flags", ALL, ids=ALL_IDS)
def test_kernel_signature_is_what_cupy_impl_passes(name, flags):
    rule = rules.get(name)
    kept = rule.state_names(flags)
    for dtype in DTYPES:
        kname, src = cuda_source.kernel_source(name, flags, dtype)
        (found, args), = _SIG.findall(src)
        assert found == kname == cuda_source.kernel_name(name, flags, dtype)
        names = [a.split()[-1].lstrip("*") for a in args.split(",")]
        assert names == ["p", "g", *[f"s{k}" for k in range(len(kept))], "n", *[h + "_" for h in rule.hyper_names]]
        other = {"float32": "double", "float64": "float"}[dtype]
        assert re.search(rf"\b{other}\b", src) is None  # no stray promotion to, or rounding through, the other type


def test_kernel_names_are_unique():
    names = {cuda_source.kernel_name(n, f, d) for n, f in ALL for d in DTYPES}
    assert len(names) == 2 * len(ALL)


def test_flag_branches_are_decided_at_generation():
    _, plain = cuda_source.kernel_source("adam", (False, False, False), "float32")
    _, ams = cuda_source.kernel_source("adam", (True, True, True), "float32")
    _, adamw = cuda_source.kernel_source("adamw", (False, True, False), "float32")
    assert "if" not in plain.split("{", 1)[1].replace("for (", "") and "s2" not in plain and "-g_" not in plain
    assert "s2[i] = vmax_;" in ams and "-g_" in ams and "wd_ * p_" in ams
    assert "p_ * decay_factor_" in adamw and "wd_ * p_" not in adamw
    _, sgd = cuda_source.kernel_source("sgd", (True, False, False, False), "float64")
    assert "if (first_ != ((double)0.0)) {" in sgd  # the runtime branch stays a C if


class _Fake(rules.Rule):
    name = "fake"
    all_states = ("s",)
    hyper_names = ("lr",)

    def __init__(self, fn):
        self.fn = fn

    def math(self, flags, sqrt, maximum):
        return self.fn(sqrt, maximum)


def _pow(sqrt, maximum):
    def f(p, g, s, lr):
        return p - lr * g ** 2, s
    return f


def _aug(sqrt, maximum):
    def f(p, g, s, lr):
        s += g
        return p, s
    return f


def _call(sqrt, maximum):
    def f(p, g, s, lr):
        return p - lr * abs(g), s
    return f


@pytest.mark.parametrize("maker,what", [(_pow, "BinOp"), (_aug, "AugAssign"), (_call, "abs")])
def test_unsupported_constructs_are_named(monkeypatch, maker, what):
    monkeypatch.setitem(rules.RULES, "fake", _Fake(maker))
    with pytest.raises(NotImplementedError, match=f"{what}.*rule 'fake'"):
        cuda_source._Translator("fake", (), "float32").body("")  # uncached, unlike kernel_source


def test_other_dtypes_are_refused():
    with pytest.raises(TypeError, match="int32"):
        cuda_source.kernel_source("sgd", (False,) * 4, np.int32)


# --- NVRTC ---------------------------------------------------------------------------------------

# What CuPy's RawKernel hands NVRTC besides -I paths (the sources include nothing): the user's
# options, then -ftz=true and the arch (compiler._compile_with_cache_cuda).
NVRTC_OPTIONS = ("--std=c++14", "-ftz=true", "-arch=compute_90")


def _nvrtc():
    try:
        from cuda.bindings import nvrtc

        err, *_ = nvrtc.nvrtcVersion()
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(err)
        return nvrtc
    except Exception as e:  # ImportError, or libnvrtc missing (RuntimeError from cuda.bindings)
        pytest.skip(f"NVRTC cannot be loaded (pip install 'cuda-bindings>=13' 'nvidia-cuda-nvrtc>=13'): {e!r}")


def nvrtc_ptx(nvrtc, src: str, filename: str) -> str:
    """PTX of ``src`` compiled with NVRTC_OPTIONS; the compile log in the assertion on failure."""
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), filename.encode(), 0, [], [])
    assert err == ok, err
    try:
        opts = [o.encode() for o in NVRTC_OPTIONS]
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        assert err == ok, f"{err}\n{log.decode(errors='replace')}\n{src}"
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        assert nvrtc.nvrtcGetPTX(prog, ptx)[0] == ok
        return ptx.rstrip(b"\x00").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


@pytest.mark.parametrize("name", list(rules.RULES))
def test_every_variant_compiles_with_nvrtc(name):
    nvrtc = _nvrtc()
    rule = rules.get(name)
    variants = [(f, d) for n, f in ALL if n == name for d in DTYPES]
    for (flags, dtype), masked in itertools.product(variants, (False, True)):
        kname, src = cuda_source.kernel_source(name, flags, dtype, masked)
        ptx = nvrtc_ptx(nvrtc, src, f"{kname}.cu")
        assert f".visible .entry {kname}(" in ptx
        n_params = 2 + len(rule.state_names(flags)) + 1 + len(rule.hyper_names) + masked
        assert len(re.findall(rf"\.param \.\w+ {kname}_param_\d+", ptx)) == n_params, (flags, dtype)
    assert len(variants) == 2 ** (_n_flags(name) + 1)


@pytest.mark.parametrize("name", list(rules.RULES))
def test_device_scalar_variants_compile_with_nvrtc(name):
    """Compile check only (no GPU here): every variant of the device-scalar form (capturable optimizers,
    GradScaler steps) in float32 (masked and not) and float64, the all-off and all-on variants in float16
    and bfloat16 (the codecs are the host-scalar form's, compiled in test_optim_dtypes), in one NVRTC
    program per rule (the codecs' include guard lets sources share one), each entry taking what
    cupy_impl passes."""
    nvrtc = _nvrtc()
    rule = rules.get(name)
    low = ("float16", pytest.importorskip("ml_dtypes").bfloat16)
    mine = [f for n, f in ALL if n == name]
    cases = [(f, d, m) for f in mine for d, m in (("float32", False), ("float32", True), ("float64", False))]
    cases += [(f, d, k % 2 == 1) for k, (f, d) in enumerate((f, d) for f in (mine[0], mine[-1]) for d in low)]
    srcs = [cuda_source.kernel_source(name, f, d, m, device=True) for f, d, m in cases]
    ptx = nvrtc_ptx(nvrtc, "\n".join(src for _, src in srcs), f"{name}_device.cu")
    for (kname, _), (flags, dtype, masked) in zip(srcs, cases):
        assert f".visible .entry {kname}(" in ptx
        low_p = np.dtype(dtype).itemsize == 2  # 16-bit: the float32 master weights after the states
        n_params = 2 + len(rule.state_names(flags)) + low_p + 1 + len(rule.const_names) + 4 + masked
        assert len(re.findall(rf"\.param \.\w+ {kname}_param_\d+", ptx)) == n_params, (flags, dtype)
    assert len({k for k, _ in srcs}) == len(cases)


def test_found_inf_checks_compile_with_nvrtc():
    nvrtc = _nvrtc()
    srcs = [cuda_source.check_source(d) for d in DTYPES + ("float16", pytest.importorskip("ml_dtypes").bfloat16)]
    ptx = nvrtc_ptx(nvrtc, "\n".join(src for _, src in srcs), "checks.cu")
    for kname, _ in srcs:
        assert len(re.findall(rf"\.param \.\w+ {kname}_param_\d+", ptx)) == 3


# --- the same body on the host -------------------------------------------------------------------

@pytest.fixture(scope="module")
def host_device_lib(tmp_path_factory):
    """Every variant's device-scalar host C (float32, float64) and the found-inf checks, in one library."""
    import ctypes

    d = tmp_path_factory.mktemp("host_c_device")
    keys = [(n, f, dt) for n, f in ALL for dt in DTYPES]
    srcs = [cuda_source.host_source(n, f, dt, device=True)[1] for n, f, dt in keys]
    lib = compile_host_c(d, "\n".join(srcs))
    fns = {}
    for name, flags, dt in keys:
        f = getattr(lib, cuda_source.kernel_name(name, flags, dt, device=True))
        f.restype = None
        fns[(name, flags, dt)] = f
    return fns


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,flags", ALL, ids=ALL_IDS)
def test_host_build_of_device_scalar_form_matches_numpy_and_skips(host_device_lib, name, flags, dtype):
    """The generated device-scalar C, built for the host: the per-step scalars computed in the kernel
    from lr and the step count, gradients unscaled by inv_scale, equal to the NumPy reference's
    host-scalar steps; with found_inf set, nothing changes."""
    import ctypes

    f = host_device_lib[(name, flags, dtype)]
    rule = rules.get(name)
    group = make_group(name, flags)
    ptr = ctypes.c_void_p
    lr, step, inv, found = (np.array([group["lr"]]), np.zeros(1), np.array([0.5], np.float32),
                            np.zeros(1, np.float32))

    def kernel(arrs, g, hypers):
        p, *states = arrs
        g2 = g * 2  # held: a temporary's pointer would dangle
        f(ptr(p.ctypes.data), ptr(g2.ctypes.data), *[ptr(s.ctypes.data) for s in states],
          ctypes.c_longlong(p.size), *[ctypes.c_double(c) for c in rule.consts(group)],
          *[ptr(a.ctypes.data) for a in (lr, step, inv, found)])
        step[0] += 1

    for k, ours, ref in run_reference_and(kernel, name, flags, dtype):
        for j, (a, b) in enumerate(zip(ours, ref)):
            np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=0, err_msg=f"step {k}, array {j}")
    before = [a.copy() for a in ours]
    found[0] = 1
    kernel(ours, np.ones_like(ours[0]), ())
    for a, b in zip(ours, before):
        np.testing.assert_array_equal(a, b)

@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    """Every variant's host C in one shared library: ``{(name, flags, dtype): ctypes function}``."""
    import ctypes

    d = tmp_path_factory.mktemp("host_c")
    keys = [(n, f, dt, m) for n, f in ALL for dt in DTYPES for m in (False, True)]
    lib = compile_host_c(d, "\n".join(cuda_source.host_source(*k)[1] for k in keys))
    fns = {}
    for name, flags, dt, masked in keys:
        rule = rules.get(name)
        scalar = ctypes.c_float if dt == "float32" else ctypes.c_double
        f = getattr(lib, cuda_source.kernel_name(name, flags, dt, masked))
        f.argtypes = ([ctypes.c_void_p] * (2 + len(rule.state_names(flags))) + [ctypes.c_longlong]
                      + [scalar] * len(rule.hyper_names) + [ctypes.c_void_p] * masked)
        f.restype = None
        fns[(name, flags, dt) + (("masked",) if masked else ())] = f
    return fns


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,flags", ALL, ids=ALL_IDS)
def test_host_build_matches_numpy_reference(host_lib, name, flags, dtype):
    f = host_lib[(name, flags, dtype)]

    def kernel(arrs, g, hypers):
        p, *states = arrs
        f(p.ctypes.data, g.ctypes.data, *[s.ctypes.data for s in states], p.size, *hypers)

    for step, ours, ref in run_reference_and(kernel, name, flags, dtype):
        for k, (a, b) in enumerate(zip(ours, ref)):
            np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=0, err_msg=f"step {step}, array {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,flags", ALL, ids=ALL_IDS)
def test_host_build_masked_skips_unmasked_elements(host_lib, name, flags, dtype):
    f = host_lib[(name, flags, dtype, "masked")]
    mask = (np.random.default_rng(1).random(257) < 0.5).astype(np.uint8)
    on = mask == 1
    start = None

    def kernel(arrs, g, hypers):
        nonlocal start
        start = start or [a.copy() for a in arrs]
        p, *states = arrs
        f(p.ctypes.data, g.ctypes.data, *[s.ctypes.data for s in states], p.size, *hypers, mask.ctypes.data)

    for step, ours, ref in run_reference_and(kernel, name, flags, dtype):
        for k, (a, b, a0) in enumerate(zip(ours, ref, start)):
            np.testing.assert_allclose(a[on], b[on], rtol=RTOL[dtype], atol=0, err_msg=f"step {step}, array {k}")
            np.testing.assert_array_equal(a[~on], a0[~on])


# --- the cupy target -----------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["backprop_gpu.array.optim.cupy_impl", "backprop_gpu.array.rng.cupy_impl"])
def test_cupy_impl_imports_without_touching_cupy(module):
    code = f"import sys; import {module}; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: build succeeds")
def test_cupy_build_without_gpu_raises_clearly():
    from backprop_gpu.array.optim import cupy_impl

    with pytest.raises(RuntimeError, match="CuPy|GPU"):
        cupy_impl.build("adam", (False, False, False), np.dtype("float32"))
    with pytest.raises(TypeError, match="int32"):
        cupy_impl.build("adam", (False, False, False), np.dtype("int32"))


# The GPU compiles with FMA contraction (NVRTC's default) and -ftz: a few ulps per operation
# that the host build does not have, compounded over three steps.
GPU_RTOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a real CUDA GPU (cupy.is_available() is False)")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,flags", ALL, ids=ALL_IDS)
def test_cupy_kernels_match_numpy_reference(name, flags, dtype):
    import cupy

    k = get_kernel("cupy", name, flags, dtype)

    def kernel(arrs, g, hypers):
        dev = [cupy.asarray(a) for a in arrs]
        k(dev[0], cupy.asarray(g), tuple(dev[1:]), hypers)
        for a, b in zip(arrs, dev):
            a[...] = cupy.asnumpy(b)

    for step, ours, ref in run_reference_and(kernel, name, flags, dtype):
        for j, (a, b) in enumerate(zip(ours, ref)):
            scale = max(float(np.abs(b).max()), np.finfo(dtype).tiny)
            np.testing.assert_allclose(a, b, rtol=GPU_RTOL[dtype], atol=GPU_RTOL[dtype] * scale,
                                       err_msg=f"step {step}, array {j}")
