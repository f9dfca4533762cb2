"""Every optimizer rule, every variant, every kernel target, against the NumPy float64 reference.

The reference itself is checked against literal transcriptions of
``torch.optim``'s ``_single_tensor_*`` loops, so the rules are verified, not
just the kernels against each other.
"""
import math
import shutil
import subprocess

import numpy as np
import pytest

from backprop_gpu.backends import BACKENDS
from backprop_gpu.fused import get_kernel
from backprop_gpu.optim import rules
from backprop_gpu.optim.optimizers import OPTIMIZERS

# Group configurations that between them switch every variant flag on and off.
VARIANTS = {
    "sgd": [dict(momentum=0.0, nesterov=False, weight_decay=0.0, maximize=False),
            dict(momentum=0.9, nesterov=False, dampening=0.1, weight_decay=0.01, maximize=False),
            dict(momentum=0.9, nesterov=True, weight_decay=0.0, maximize=True)],
    "adagrad": [dict(), dict(weight_decay=0.1, lr_decay=0.01, initial_accumulator_value=0.1, maximize=True)],
    "adadelta": [dict(), dict(weight_decay=0.1, rho=0.8, maximize=True)],
    "rmsprop": [dict(), dict(momentum=0.9), dict(centered=True, weight_decay=0.1),
                dict(momentum=0.5, centered=True, maximize=True)],
    "adam": [dict(), dict(amsgrad=True, weight_decay=0.1), dict(maximize=True)],
    "adamw": [dict(), dict(amsgrad=True, weight_decay=0.0), dict(maximize=True)],
}
CASES = [(name, i) for name, vs in VARIANTS.items() for i in range(len(vs))]


def group_for(name, i, lr=0.01):
    """A full param group: the optimizer's own defaults overridden by the variant."""
    import inspect

    sig = inspect.signature(OPTIMIZERS[name].__init__)
    g = {k: p.default for k, p in sig.parameters.items()
         if k not in ("self", "params", "foreach", "fused")}
    g.update(VARIANTS[name][i])
    g["lr"] = lr
    return g


def targets():
    out = [pytest.param("numpy"), pytest.param("numba")]
    why = BACKENDS["numba-cuda"].availability()
    out.append(pytest.param("numba-cuda", marks=[pytest.mark.skip(reason=why)] if why else []))
    why = BACKENDS["cupy"].availability()
    out.append(pytest.param("cupy", marks=[pytest.mark.gpu] + ([pytest.mark.skip(reason=why)] if why else [])))
    return out


def run_steps(target, name, group, dtype, p0, grads):
    """Run the rule through ``target``'s kernel; returns host p and states."""
    rule = rules.get(name)
    flags = rule.flags(group)
    dtype = np.dtype(dtype)
    to_dev, to_host = (lambda a: a), (lambda a: a)
    if target == "cupy":
        import cupy

        to_dev, to_host = cupy.asarray, cupy.asnumpy
    p = to_dev(p0.astype(dtype))
    states = tuple(to_dev(np.full(p0.shape, fill, dtype)) for _, fill in rule.state_init(flags, group))
    kernel = get_kernel(target, name, flags, dtype)
    for step, g in enumerate(grads, start=1):
        hypers = tuple(dtype.type(h) for h in rule.hypers(group, step, flags))
        kernel(p, to_dev(g.astype(dtype)), states, hypers)
    return to_host(p), [to_host(s) for s in states]


def rel_err(x, ref):
    return float(np.linalg.norm(x.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-300))


@pytest.mark.parametrize("target", targets())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,variant", CASES)
def test_kernel_matches_float64_reference(target, dtype, name, variant):
    n = 64 if target == "numba-cuda" else 1000  # the simulator runs a Python thread per CUDA thread
    rng = np.random.default_rng(hash((name, variant)) % 2**32)
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(50)]
    group = group_for(name, variant)
    ref_p, ref_s = run_steps("numpy", name, group, "float64", p0, grads)
    p, s = run_steps(target, name, group, dtype, p0, grads)
    tol = 1e-6 if dtype == "float32" else 1e-13
    assert rel_err(p, ref_p) <= tol, (target, name, variant)
    for a, b in zip(s, ref_s):
        assert rel_err(a, b) <= (10 * tol), (target, name, variant)
    assert not np.allclose(p, p0)  # the step did something


# --- the reference rules against literal transcriptions of torch.optim --------------------

def torch_sgd(p, grads, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    buf = None
    for g in grads:
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else buf * momentum + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def torch_adagrad(p, grads, lr, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, maximize=False):
    s = np.full_like(p, initial_accumulator_value)
    for step, g in enumerate(grads, 1):
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (np.sqrt(s) + eps)
    return p


def torch_adadelta(p, grads, lr, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    sq, acc = np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        sq = sq * rho + (1 - rho) * g * g
        delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
        acc = acc * rho + (1 - rho) * delta * delta
        p = p - lr * delta
    return p


def torch_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False):
    sq, buf, ga = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        sq = sq * alpha + (1 - alpha) * g * g
        if centered:
            ga = ga + (1 - alpha) * (g - ga)
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = buf * momentum + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


def torch_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
               decoupled=False):
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for step, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = m + (1 - b1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = v * b2 + (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        if amsgrad:
            vmax = np.maximum(vmax, v)
            denom = np.sqrt(vmax) / math.sqrt(bc2) + eps
        else:
            denom = np.sqrt(v) / math.sqrt(bc2) + eps
        p = p - (lr / bc1) * (m / denom)
    return p


TORCH = {"sgd": torch_sgd, "adagrad": torch_adagrad, "adadelta": torch_adadelta, "rmsprop": torch_rmsprop,
         "adam": torch_adam, "adamw": lambda p, g, **kw: torch_adam(p, g, decoupled=True, **kw)}


@pytest.mark.parametrize("name,variant", CASES)
def test_reference_rule_matches_torch_transcription(name, variant):
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(200)
    grads = [rng.standard_normal(200) for _ in range(20)]
    group = group_for(name, variant, lr=0.05)
    ours, _ = run_steps("numpy", name, group, "float64", p0, grads)
    kw = {k: v for k, v in group.items() if k in TORCH[name].__code__.co_varnames or name == "adamw"}
    if name == "adamw":
        kw = {k: v for k, v in group.items() if k in torch_adam.__code__.co_varnames}
    theirs = TORCH[name](p0.copy(), grads, **kw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


# --- compile checks ------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    from backprop_gpu.fused.cupy_impl import source

    src = tmp_path / "optim.cu"
    src.write_text(source())
    out = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", "-DBACKPROP_GPU_COMPILE_CHECK", str(src),
                          "-o", str(tmp_path / "optim.ptx")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "optim.ptx").read_text()
    for kernel in ("sgd", "adagrad", "adadelta", "rmsprop", "adam"):
        assert kernel in ptx


def _nvrtc_reason():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
        return None
    except Exception as e:  # no NVRTC wheel: pip install "numba-cuda[cu13]"
        return f"NVRTC not available: {e}"


_PTX_SCRIPT = """
import json, sys
import numpy as np
from backprop_gpu.fused.numba_cuda import compile_ptx
done = 0
for name, flags in json.loads(sys.argv[1]):
    for dtype in ("float32", "float64"):
        assert ".visible .func" in compile_ptx(name, tuple(flags), np.dtype(dtype))
        done += 1
print(done)
"""


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=str(_nvrtc_reason()))
def test_numba_cuda_rules_compile_to_ptx():
    """Type-check every variant for real CUDA (the simulator never does), in a process
    without the simulator, since this one may have it switched on."""
    import json
    import os
    import sys

    cases = [(name, list(rules.get(name).flags(group_for(name, v)))) for name, v in CASES]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, json.dumps(cases)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == 2 * len(CASES)


@pytest.mark.parametrize("name,variant", CASES)
def test_cupy_name_expressions_exist_in_source(name, variant):
    """Every variant the cupy backend can ask for is a template the .cu file defines."""
    from backprop_gpu.fused.cupy_impl import KERNEL_HYPERS, KERNEL_STATES, name_expression, source

    rule = rules.get(name)
    flags = rule.flags(group_for(name, variant))
    expr = name_expression(name, flags, np.float32)
    kernel = expr.split("<")[0]
    assert f"__global__ void {kernel}(" in source()
    assert len(expr.split(",")) == 1 + len(flags) + (1 if name in ("adam", "adamw") else 0)
    assert set(rule.state_names(flags)) <= set(KERNEL_STATES[name])
    assert len(rule.hypers(group_for(name, variant), 1, flags)) == KERNEL_HYPERS[name]
