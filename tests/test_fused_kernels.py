"""The optimizer rules and their fused kernels, at the raw-array level.

* Every rule x every variant (each combination of its flags) x float32/float64 x
  every kernel target available: 50 steps with fresh random gradients, against
  the float64 NumPy reference running the same rule function.
* The reference rules against literal NumPy transcriptions of ``torch.optim``'s
  ``_single_tensor_*`` loops, and against ``torch.optim`` itself when torch is
  installed, so the rules are verified, not just the kernels against each other.
* The Numba CUDA kernels compiled to PTX through NVRTC, with no GPU. (The cupy
  target's CUDA C, generated from the rules, is tested in tests/array/test_cuda_source.py.)

Tolerances (norm-relative, ``|x - ref| / |ref|`` over the whole array, since a
per-element ``rtol`` is meaningless where a state passes near zero): parameters
and states within 1e-6 in float32 and 1e-12 in float64. The reference gets the
same dtype-rounded p0, gradients and per-step scalars, so only the arithmetic
differs. The displacement ``p - p0`` is checked too (1e-4 in float32, where
float32 storage of ``p`` itself bounds it; 1e-10 in float64), so an update
cannot hide under the size of ``p``. Worst seen on CPU: float32 2.6e-7 (p),
3.1e-7 (states), 1.7e-5 (displacement); float64 bit-identical.
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

from backprop_gpu.array.optim import get_check, get_kernel
from backprop_gpu.array.optim import rules

# torch.optim's defaults (torch 2.x); the variants below override them.
DEFAULTS = {
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
}
# The group settings that switch each flag off/on; the product covers every variant.
FLAG_KNOBS = {
    "sgd": dict(momentum=(0.0, 0.9), nesterov=(False, True), weight_decay=(0.0, 0.01), maximize=(False, True)),
    "adagrad": dict(weight_decay=(0.0, 0.1), maximize=(False, True)),
    "adadelta": dict(weight_decay=(0.0, 0.1), maximize=(False, True)),
    "rmsprop": dict(momentum=(0.0, 0.5), centered=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True)),
    "adam": dict(amsgrad=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True)),
    "adamw": dict(amsgrad=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True)),
}
# Non-default values of the other hyperparameters, on every second variant (where valid).
EXTRAS = {
    "sgd": dict(dampening=0.1),
    "adagrad": dict(lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": dict(rho=0.5),
    "rmsprop": dict(alpha=0.9),
    "adam": dict(betas=(0.8, 0.99)),
    "adamw": dict(betas=(0.5, 0.9)),
}
# Learning rates large enough that 50 steps move p well away from p0.
LR = {"sgd": 0.01, "adagrad": 0.05, "adadelta": 1.0, "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01}


def _variants():
    out = []
    for name, knobs in FLAG_KNOBS.items():
        seen = set()
        for k, values in enumerate(itertools.product(*knobs.values())):
            group = dict(DEFAULTS[name], lr=LR[name], **dict(zip(knobs, values)))
            try:
                rules.get(name).validate(group)
            except ValueError:
                continue  # e.g. Nesterov without momentum
            if k % 2:
                extra = dict(group, **EXTRAS[name])
                try:
                    rules.get(name).validate(extra)
                    group = extra
                except ValueError:
                    pass
            flags = rules.get(name).flags(group)
            assert flags not in seen
            seen.add(flags)
            out.append((name, group))
    return out


VARIANTS = _variants()
CASES = [pytest.param(name, group, id=f"{name}-{''.join('1' if f else '0' for f in rules.get(name).flags(group))}")
         for name, group in VARIANTS]


def test_every_flag_combination_is_covered():
    per_rule = {}
    for name, group in VARIANTS:
        per_rule.setdefault(name, set()).add(rules.get(name).flags(group))
    # sgd: Nesterov needs momentum (12 of 16); the others: all combinations
    assert {n: len(v) for n, v in per_rule.items()} == {
        "sgd": 12, "adagrad": 4, "adadelta": 4, "rmsprop": 16, "adam": 8, "adamw": 8}


# --- targets ------------------------------------------------------------------------------

def _numba_cuda_reason():
    try:
        from numba import config, cuda
    except ImportError:
        return "numba-cuda is not installed"
    if config.ENABLE_CUDASIM:
        return None
    if not cuda.is_available():
        return "no CUDA GPU, and NUMBA_ENABLE_CUDASIM was not set before numba was imported"
    return None


def _cupy_reason():
    try:
        import cupy
    except Exception as e:
        return f"CuPy is not importable: {e}"
    try:
        return None if cupy.is_available() else "CuPy found no CUDA GPU (cupy.is_available() is False)"
    except Exception as e:
        return f"CuPy found no usable CUDA driver: {e}"


def _targets():
    out = [pytest.param("numpy"), pytest.param("numba")]
    why = _numba_cuda_reason()
    out.append(pytest.param("numba-cuda", marks=[pytest.mark.skip(reason=why)] if why else []))
    why = _cupy_reason()
    out.append(pytest.param("cupy", marks=[pytest.mark.gpu] + ([pytest.mark.skip(reason=why)] if why else [])))
    return out


def _transfers(target):
    """(to_device, to_host) for a target's arrays."""
    if target == "cupy":
        import cupy

        return cupy.asarray, cupy.asnumpy
    if target == "numba-cuda":
        from numba import config, cuda

        if not config.ENABLE_CUDASIM:
            return cuda.to_device, lambda a: a.copy_to_host()
    return (lambda a: a), (lambda a: a)


def run_steps(target, name, group, dtype, p0, grads, hyper_dtype=None, device=False):
    """Run rule ``name`` for ``len(grads)`` steps through ``target``'s kernel; returns host p and states.

    ``hyper_dtype``: round the per-step scalars through this dtype first (default: ``dtype``).
    ``device``: the device-scalar form (capturable optimizers): lr and the step count in device arrays,
    the per-step scalars computed by the kernel, the count advanced on the device after each launch
    (the gradients are given scaled by 4 and unscaled by the kernel's ``inv_scale`` of 1/4, exactly).
    """
    rule = rules.get(name)
    flags = rule.flags(group)
    dtype = np.dtype(dtype)
    hround = np.dtype(hyper_dtype or dtype).type
    to_dev, to_host = _transfers(target)
    p = to_dev(p0.astype(dtype))
    states = tuple(to_dev(np.full(p0.shape, fill, dtype)) for _, fill in rule.state_init(flags, group))
    kernel = get_kernel(target, name, flags, dtype, device=device)
    if device:
        step_dev = np.zeros(1)
        scalars = [to_dev(np.array([group["lr"]])), None, to_dev(np.array([0.25], np.float32)),
                   to_dev(np.zeros(1, np.float32))]
    for step, g in enumerate(grads, start=1):
        if device:
            scalars[1] = to_dev(step_dev)  # the count before this step, as the optimizer keeps it
            kernel(p, to_dev((g * 4).astype(dtype)), states, rule.consts(group), tuple(scalars))
            step_dev += 1
            continue
        hypers = tuple(dtype.type(hround(h)) for h in rule.hypers(group, step, flags))
        kernel(p, to_dev(g.astype(dtype)), states, hypers)
    return to_host(p), [to_host(s) for s in states]


def rel_err(x, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / max(np.linalg.norm(ref), 1e-300))


TOL = {"float32": dict(p=1e-6, state=1e-6, step=1e-4), "float64": dict(p=1e-12, state=1e-12, step=1e-10)}


# the device-scalar form (capturable optimizers, GradScaler steps) beside the host-scalar one: every
# variant where only NumPy runs; on the compiled targets, where each variant is a compilation of its
# own (~0.5 s), every rule on a quarter of its variants; in the CUDA simulator (~0.4 s a test), each
# rule's first variant in float32, over 10 steps
FORMS = pytest.mark.parametrize("device", [False, True], ids=["host-scalars", "device-scalars"])
DEVICE_CASES = CASES[::4]
assert {c.values[0] for c in DEVICE_CASES} == set(rules.RULES)


def _kernel_params():
    """(target, dtype, name, group, device) for the kernel tests: every case in the host-scalar form,
    :data:`DEVICE_CASES` in the device-scalar form (fewer under the simulator)."""
    out = []
    for t in _targets():
        target = t.values[0]
        for dtype in ("float32", "float64"):
            first = set()
            for c in CASES:
                out.append(pytest.param(target, dtype, *c.values, False, marks=t.marks,
                                        id=f"{c.id}-{dtype}-{target}"))
            for c in DEVICE_CASES:
                if target == "numba-cuda" and (dtype != "float32" or c.values[0] in first):
                    continue
                first.add(c.values[0])
                out.append(pytest.param(target, dtype, *c.values, True, marks=t.marks,
                                        id=f"{c.id}-device-scalars-{dtype}-{target}"))
    return out


KERNEL_PARAMS = _kernel_params()


@pytest.mark.parametrize("target,dtype,name,group,device", KERNEL_PARAMS)
def test_kernel_matches_float64_reference(target, dtype, name, group, device):
    # the simulator runs a Python thread per CUDA thread: 100 elements still exercise the grid-stride loop
    n = 100 if target == "numba-cuda" else 1000
    rng = np.random.default_rng(zlib.crc32(f"{name}{sorted(group.items())}".encode()))
    # The reference starts from the same dtype-rounded data and per-step scalars, so only the arithmetic
    # differs. (Rounded scalars matter: AdamW's float32 1 - lr*wd = 0.999 is off by 1.3e-8, a systematic
    # 6.4e-7 over 50 steps, in torch as here; test_reference_rule_matches_torch_optim covers that path.)
    p0 = rng.standard_normal(n).astype(dtype).astype(np.float64)
    steps = 10 if device and target == "numba-cuda" else 50
    grads = [rng.standard_normal(n).astype(dtype).astype(np.float64) for _ in range(steps)]
    ref_p, ref_s = run_steps("numpy", name, group, "float64", p0, grads, hyper_dtype=dtype)
    p, s = run_steps(target, name, group, dtype, p0, grads, device=device)
    assert p.dtype == np.dtype(dtype) and all(a.dtype == np.dtype(dtype) for a in s)
    tol = TOL[dtype]
    assert rel_err(p, ref_p) <= tol["p"]
    assert rel_err(p - p0, ref_p - p0) <= tol["step"]
    assert np.linalg.norm(ref_p - p0) > 1e-3 * np.linalg.norm(p0)  # the steps did move p
    assert len(s) == len(ref_s) == len(rules.get(name).state_names(rules.get(name).flags(group)))
    for a, b in zip(s, ref_s):
        assert rel_err(a, b) <= tol["state"]


@pytest.mark.parametrize("target,dtype,name,group,device", KERNEL_PARAMS)
def test_masked_kernel_updates_only_the_masked_elements(target, dtype, name, group, device):
    """The masked form (parameters without a gradient are skipped, as torch.optim skips them):
    unmasked elements and their states keep their bits; masked ones step as the plain kernel does."""
    n = 100 if target == "numba-cuda" else 1000
    rule, dt = rules.get(name), np.dtype(dtype)
    flags = rule.flags(group)
    rng = np.random.default_rng(zlib.crc32(f"mask{name}{sorted(group.items())}".encode()))
    p0 = rng.standard_normal(n).astype(dt)
    init = [np.full(n, fill, dt) for _, fill in rule.state_init(flags, group)]
    mask = (rng.random(n) < 0.5).astype(np.uint8)
    grads = [rng.standard_normal(n).astype(dt) for _ in range(5)]
    to_dev, to_host = _transfers(target)
    runs = []
    for masked in (False, True):
        p, states = to_dev(p0.copy()), tuple(to_dev(s.copy()) for s in init)
        kernel = get_kernel(target, name, flags, dt, masked, device)
        for step, g in enumerate(grads, start=1):
            m = [to_dev(mask)] if masked else []
            if device:  # the count before this step; inv_scale 1, found_inf 0
                scalars = tuple(to_dev(np.array([v], t)) for v, t in ((group["lr"], np.float64),
                                (step - 1, np.float64), (1, np.float32), (0, np.float32)))
                kernel(p, to_dev(g), states, rule.consts(group), scalars, *m)
                continue
            hypers = tuple(dt.type(h) for h in rule.hypers(group, step, flags))
            kernel(p, to_dev(g), states, hypers, *m)
        runs.append((to_host(p), [to_host(s) for s in states]))
    (plain_p, plain_s), (p, s) = runs
    on, off = mask == 1, mask == 0
    np.testing.assert_array_equal(p[off], p0[off])
    for a, a0 in zip(s, init):
        np.testing.assert_array_equal(a[off], a0[off])
    assert rel_err(p[on], plain_p[on]) <= TOL[dtype]["p"] and np.any(p[on] != p0[on])
    for a, b in zip(s, plain_s):
        assert rel_err(a[on], b[on]) <= TOL[dtype]["state"]


@pytest.mark.parametrize("target", _targets())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_found_inf_check_sets_the_flag_and_the_update_then_skips(target, dtype):
    """GradScaler's two launches: the check sets found_inf on an inf or NaN anywhere (and never
    clears it); the device-scalar update then leaves p and every state bit for bit as they were."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    dt = np.dtype(dtype)
    n = 100 if target == "numba-cuda" else 1000
    to_dev, to_host = _transfers(target)
    check = get_check(target, dt)
    rng = np.random.default_rng(5)
    g = rng.standard_normal(n).astype(dt)
    flag = to_dev(np.zeros(1, np.float32))
    check(to_dev(g), flag)
    assert to_host(flag)[0] == 0
    for bad in (np.inf, -np.inf, np.nan):
        for at in (0, n // 2, n - 1):
            flag = to_dev(np.zeros(1, np.float32))
            h = g.copy()
            h[at] = bad
            check(to_dev(h), flag)
            assert to_host(flag)[0] == 1, (bad, at)
            check(to_dev(g), flag)  # a clean buffer after a bad one: still set
            assert to_host(flag)[0] == 1
    if dt.name in ("float16", "float64"):
        return  # the skip below is dtype-independent code: two dtypes (one 16-bit) keep compile time down
    group = dict(DEFAULTS["adam"], lr=0.01, amsgrad=True)
    rule = rules.get("adam")
    flags = rule.flags(group)
    kernel = get_kernel(target, "adam", flags, dt, device=True)
    sdt = np.float32 if dt.itemsize == 2 else dt
    # the 16-bit kernel's states end with the float32 master weights
    p0, init = rng.standard_normal(n).astype(dt), [rng.random(n).astype(sdt) for _ in range(3 + (dt.itemsize == 2))]
    p, states = to_dev(p0.copy()), tuple(to_dev(s.copy()) for s in init)
    scalars = (to_dev(np.array([0.01])), to_dev(np.array([3.0])), to_dev(np.array([0.5], np.float32)), flag)
    kernel(p, to_dev(h), states, rule.consts(group), scalars)
    np.testing.assert_array_equal(to_host(p).view(np.uint8), p0.view(np.uint8))
    for a, a0 in zip(states, init):
        np.testing.assert_array_equal(to_host(a), a0)


# --- the rule descriptions ---------------------------------------------------------------

@pytest.mark.parametrize("name,group", CASES)
def test_rule_description_is_consistent(name, group):
    rule = rules.get(name)
    flags = rule.flags(group)
    fn = rule.math(flags, math.sqrt, max)
    params = list(inspect.signature(fn).parameters)
    assert params[:2] == ["p", "g"]
    assert len(params) == 2 + len(rule.all_states) + len(rule.hyper_names)
    assert tuple(params[2 + len(rule.all_states):]) == rule.hyper_names
    hypers = rule.hypers(group, 3, flags)
    assert len(hypers) == len(rule.hyper_names) and all(isinstance(h, (int, float)) for h in hypers)
    assert rules.prepare_hypers(name, group, 3) == hypers
    kept = rule.state_names(flags)
    assert set(kept) <= set(rule.all_states)
    assert [s for s in rule.all_states if s in kept] == list(kept)  # kept in all_states order


def test_unknown_rule_and_target_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer rule"):
        rules.get("lamb")
    with pytest.raises(ValueError, match="unknown kernel target"):
        get_kernel("tpu", "adam", (False, False, False), np.float32)


def test_kernels_are_cached_per_target_rule_flags_dtype():
    k = get_kernel("numba", "sgd", (True, False, False, False), np.float32)
    assert get_kernel("numba", "sgd", (True, False, False, False), "float32") is k
    assert get_kernel("numba", "sgd", (True, False, False, False), np.float64) is not k
    assert get_kernel("numba", "sgd", (False, False, False, False), np.float32) is not k


def test_numba_kernel_keeps_float32_arithmetic_with_python_float_hypers():
    rule = rules.get("adam")
    group = dict(DEFAULTS["adam"])
    flags = rule.flags(group)
    k = get_kernel("numba", "adam", flags, np.float32)
    p, g, m, v = (np.ones(64, np.float32) for _ in range(4))
    k(p, g, (m, v), rule.hypers(group, 1, flags))  # Python floats, cast by the kernel
    assert {str(t) for sig in k.dispatcher.signatures for t in sig} <= {"array(float32, 1d, C)", "float32"}


_CACHE_SCRIPT = """
import numpy as np
from backprop_gpu.array.optim import get_check, get_kernel
k = get_kernel("numba", "rmsprop", (True, True, False, False), np.float32)
p, g, a, b, c = (np.ones(10, np.float32) for _ in range(5))
k(p, g, (a, b, c), (0.01, 0.99, 0.01, 1e-8, 0.0, 0.9))
print(sum(k.dispatcher.stats.cache_hits.values()))
"""


def test_numba_loops_are_cached_on_disk(tmp_path):
    """A second process loads the compiled loop from the cache instead of compiling it."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert [int(r.stdout.split()[-1]) for r in runs] == [0, 1]
    assert len(list((tmp_path / "backprop_gpu_fused").glob("rmsprop_1100_*.py"))) == 1


def test_numba_serial_and_parallel_loops_have_their_own_cache_files():
    """Numba's cache keys a function by name and line, not by ``parallel=True``: under one name the
    parallel loop loaded the serial one's machine code from the cache (or the other way round)."""
    k = get_kernel("numba", "sgd", (True, False, False, False), np.float32)
    files = [d._cache._cache_file._index_name for d in (k.dispatcher, k.parallel_dispatcher)]
    assert files[0] != files[1]


def test_numba_loop_compiles_in_memory_when_the_cache_dir_is_unwritable(tmp_path, monkeypatch):
    from backprop_gpu.array.optim import numba_cpu

    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(numba_cpu, "source_dir", lambda: tmp_path / "a_file" / "fused")  # mkdir fails
    k = numba_cpu.build("sgd", (False, False, False, False), np.dtype(np.float64))
    p, g = np.ones(8), np.ones(8)
    k(p, g, (), (0.5, 0.0, 0.0, 1.0, 1.0))
    assert np.all(p == 0.5)


# --- the reference rules against literal transcriptions of torch.optim -------------------------
# Each follows torch/optim/<name>.py _single_tensor_<name> statement by statement (torch 2.x,
# the non-capturable, non-differentiable, real-valued path), with in-place tensor methods
# written out: x.mul_(a).addcmul_(u, w, value=c) is x * a + c * u * w, x.addcdiv_(u, w, value=c)
# is x + c * (u / w), x.lerp_(e, w) is x + w * (e - x) for |w| < 0.5 and e - (e - x) * (1 - w) else.

def _lerp(x, e, w):
    return x + w * (e - x) if abs(w) < 0.5 else e - (e - x) * (1 - w)


def torch_sgd(param, grads, lr, momentum, dampening, weight_decay, nesterov, maximize):
    buf = None
    for grad in grads:
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param                  # grad.add(param, alpha=weight_decay)
        if momentum != 0:
            if buf is None:
                buf = grad.copy()                               # torch.clone(grad).detach()
            else:
                buf = buf * momentum + (1 - dampening) * grad   # buf.mul_(momentum).add_(grad, alpha=1-dampening)
            if nesterov:
                grad = grad + momentum * buf                    # grad.add(buf, alpha=momentum)
            else:
                grad = buf
        param = param + (-lr) * grad                            # param.add_(grad, alpha=-lr)
    return param


def torch_adagrad(param, grads, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize):
    state_sum = np.full_like(param, initial_accumulator_value)
    for step, grad in enumerate(grads, 1):
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sum + 1 * grad * grad                 # state_sum.addcmul_(grad, grad, value=1)
        std = np.sqrt(state_sum) + eps                          # state_sum.sqrt().add_(eps)
        param = param + (-clr) * (grad / std)                   # param.addcdiv_(grad, std, value=-clr)
    return param


def torch_adadelta(param, grads, lr, rho, eps, weight_decay, maximize):
    square_avg, acc_delta = np.zeros_like(param), np.zeros_like(param)
    for grad in grads:
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        square_avg = square_avg * rho + (1 - rho) * grad * grad  # mul_(rho).addcmul_(grad, grad, value=1-rho)
        std = np.sqrt(square_avg + eps)                         # square_avg.add(eps).sqrt_()
        delta = np.sqrt(acc_delta + eps)                        # acc_delta.add(eps).sqrt_()
        delta = delta / std * grad                              # delta.div_(std).mul_(grad)
        acc_delta = acc_delta * rho + (1 - rho) * delta * delta
        param = param + (-lr) * delta                           # param.add_(delta, alpha=-lr)
    return param


def torch_rmsprop(param, grads, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    square_avg, grad_avg, buf = np.zeros_like(param), np.zeros_like(param), np.zeros_like(param)
    for grad in grads:
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        square_avg = square_avg * alpha + (1 - alpha) * grad * grad
        if centered:
            grad_avg = _lerp(grad_avg, grad, 1 - alpha)         # grad_avg.lerp_(grad, 1 - alpha)
            avg = np.sqrt(square_avg + (-1) * grad_avg * grad_avg)  # addcmul(ga, ga, value=-1).sqrt_()
        else:
            avg = np.sqrt(square_avg)
        avg = avg + eps                                         # avg.add_(eps)
        if momentum > 0:
            buf = buf * momentum + 1 * (grad / avg)             # buf.mul_(momentum).addcdiv_(grad, avg)
            param = param + (-lr) * buf                         # param.add_(buf, alpha=-lr)
        else:
            param = param + (-lr) * (grad / avg)                # param.addcdiv_(grad, avg, value=-lr)
    return param


def torch_adam(param, grads, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=False):
    beta1, beta2 = betas
    exp_avg, exp_avg_sq, max_exp_avg_sq = np.zeros_like(param), np.zeros_like(param), np.zeros_like(param)
    for step, grad in enumerate(grads, 1):
        grad = grad if not maximize else -grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                param = param * (1 - lr * weight_decay)         # param.mul_(1 - lr * weight_decay)
            else:
                grad = grad + weight_decay * param
        exp_avg = _lerp(exp_avg, grad, 1 - beta1)               # exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if amsgrad:
            max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
            denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        param = param + (-step_size) * (exp_avg / denom)        # param.addcdiv_(exp_avg, denom, value=-step_size)
    return param


TRANSCRIPTIONS = {"sgd": torch_sgd, "adagrad": torch_adagrad, "adadelta": torch_adadelta,
                  "rmsprop": torch_rmsprop, "adam": torch_adam,
                  "adamw": lambda *a, **kw: torch_adam(*a, decoupled_weight_decay=True, **kw)}


def _torch_kwargs(name, group):
    return {k: group[k] for k in DEFAULTS[name]}


@FORMS
@pytest.mark.parametrize("name,group", CASES)
def test_reference_rule_matches_torch_transcription(name, group, device):
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(200)
    grads = [rng.standard_normal(200) for _ in range(10)]
    ours, _ = run_steps("numpy", name, group, "float64", p0, grads, device=device)
    theirs = TRANSCRIPTIONS[name](p0.copy(), grads, **_torch_kwargs(name, group))
    # the same operations in the same order; lerp's second form (betas[0] = 0.5) differs in the last bits
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)


@FORMS
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,group", CASES)
def test_reference_rule_matches_torch_optim(name, group, dtype, device):
    """Against torch.optim itself (single-tensor path), where torch is installed. (torch's own
    capturable path needs CUDA tensors; its math is this same path's.)"""
    torch = pytest.importorskip("torch")
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
           "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(300).astype(dtype)
    grads = [rng.standard_normal(300).astype(dtype) for _ in range(20)]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = cls([tp], foreach=False, **_torch_kwargs(name, group))
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    theirs = tp.detach().numpy()
    ours, _ = run_steps("numpy", name, group, dtype, p0, grads, device=device)
    # float32: the same float32 roundings up to torch's vectorised CPU kernels (FMAs in lerp)
    assert rel_err(ours, theirs) <= (1e-13 if dtype == "float64" else 1e-6)
    assert rel_err(ours - p0, theirs - p0) <= (1e-11 if dtype == "float64" else 1e-4)


# --- compile checks ----------------------------------------------------------------------
# (the cupy target's generated CUDA C has its own tests in tests/array/test_cuda_source.py)

def _nvrtc_reason():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
        return None
    except Exception as e:
        return f"NVRTC is not available (pip install 'numba-cuda[cu13]'): {e}"


_PTX_SCRIPT = """
import json, re, sys
from backprop_gpu.array.optim.numba_cuda import compile_ptx_check
done = 0
for name, flags in json.loads(sys.argv[1]):
    for dtype, masked in ((d, m) for d in ("float32", "float64") for m in (False, True)):
        ptx = compile_ptx_check(name, tuple(flags), dtype, masked=masked)
        assert ".visible .entry" in ptx, (name, flags, dtype, masked)
        if dtype == "float32":  # hypers cast to float32: no double arithmetic sneaks in
            assert not re.search(r"\\.f64\\b", ptx), (name, flags)
        done += 1
print(done)
"""


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=str(_nvrtc_reason()))
def test_numba_cuda_kernels_compile_to_ptx():
    """Type-check every variant's whole kernel for real CUDA (the simulator never does), in a
    process without the simulator, since this one may have it switched on."""
    cases = [(name, list(rules.get(name).flags(group))) for name, group in VARIANTS]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, json.dumps(cases)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == 4 * len(cases)


_DEVICE_PTX_SCRIPT = """
import json, sys
from backprop_gpu.array.optim.numba_cuda import compile_ptx_check
done = 0
for name, flags in json.loads(sys.argv[1]):
    ptx = compile_ptx_check(name, tuple(flags), "float32", masked=True, device=True)
    assert ".visible .entry" in ptx and "ld.global.f64" in ptx, (name, flags)  # lr and step read on the device
    done += 1
for dtype in ("float32", "float16"):
    assert ".visible .entry" in compile_ptx_check("check", (), dtype)
    done += 1
print(done)
"""


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=str(_nvrtc_reason()))
def test_numba_cuda_device_scalar_kernels_and_checks_compile_to_ptx():
    """Compile check only: one variant per rule (all flags on) of the device-scalar form, masked, and the
    found-inf check, for real CUDA, in a process without the simulator."""
    cases = [(name, [True] * len(rules.get(name).flags(dict(DEFAULTS[name])))) for name in rules.RULES]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", _DEVICE_PTX_SCRIPT, json.dumps(cases)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == len(cases) + 2


@pytest.mark.parametrize("name,group", [v for v in VARIANTS if v[0] in ("sgd", "adam", "rmsprop")][::3])
def test_numba_parallel_loop_matches_serial_loop(name, group, monkeypatch):
    """Large buffers take the parallel compilation of the same loop: identical results."""
    from backprop_gpu.array.optim import numba_cpu

    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(500)
    grads = [rng.standard_normal(500) for _ in range(5)]
    serial = run_steps("numba", name, group, "float32", p0, grads)
    monkeypatch.setattr(numba_cpu, "PARALLEL_MIN", 0)
    parallel = run_steps("numba", name, group, "float32", p0, grads)
    k = get_kernel("numba", name, rules.get(name).flags(group), np.float32)
    assert k.parallel_dispatcher.signatures  # the parallel loop did run
    np.testing.assert_array_equal(serial[0], parallel[0])
    for a, b in zip(serial[1], parallel[1]):
        np.testing.assert_array_equal(a, b)
