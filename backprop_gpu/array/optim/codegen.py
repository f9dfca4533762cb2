"""Source for the loops that call a rule's scalar function once per element.

A rule's function takes all of its states; a variant keeps only some (see
``rules.state_slots``), so the loop passes a zero for the others and drops
them on return. The math itself is never restated here.

The device-scalar form (``n_consts`` given) is where the kernels' share of
mixed precision and capturable steps is stated, once for the loop targets
(``cuda_source`` writes the same steps in C): the loop takes the group
constants by value and then :data:`DEVICE_SCALARS`, four 1-element device
arrays, and before touching any element

1. returns at once if ``found_inf[0]`` is nonzero (``GradScaler`` saw an inf
   or NaN: the whole step is skipped, every buffer alike, since the flag was
   set by the check launches before any update launch);
2. evaluates the rule's ``hyper_math`` at ``(lr[0], step[0] + 1, consts)`` in
   float64 (``step`` holds the count before this step; the optimizer adds one
   after the launch, on the device) and casts the hypers to the compute dtype;
3. multiplies every gradient element by ``inv_scale[0]`` as it is loaded.
"""
from __future__ import annotations

import inspect


def n_hypers(fn, n_all_states: int) -> int:
    """How many per-step scalars ``fn`` takes after p, g and its states."""
    return len(inspect.signature(fn).parameters) - 2 - n_all_states


#: the device arrays the device-scalar form takes after the constants: float64 ``lr`` and ``step``
#: (the count before this step), float32 ``inv_scale`` and ``found_inf`` (``GradScaler``'s, or 1 and 0)
DEVICE_SCALARS = ("lr", "step", "inv_scale", "found_inf")


def device_prelude(n_h: int, n_consts: int) -> str:
    """Lines that skip on ``found_inf``, compute ``h0..`` from the device scalars (globals ``hfn``, the
    rule's ``hyper_math``, and ``ct``, the compute dtype) and read the gradient factor ``inv``."""
    consts = "".join(f", c{k}" for k in range(n_consts))
    lines = ["if found_inf[0] != 0:", "    return", f"r = hfn(lr[0], step[0] + 1.0{consts})"]
    lines += [f"h{k} = ct(r[{k}])" for k in range(n_h)] + ["inv = ct(inv_scale[0])"]
    return "\n".join(lines)


def loop_source(name: str, slots: list, n_h: int, header: str, index_range: str, masked: bool = False,
                codec: tuple | None = None, n_consts: int | None = None) -> str:
    """``def name(p, g, s0.., [w,] h0.., z)``: for each i, ``p[i], s[i].. = fn(p[i], g[i], ..)``.

    ``masked``: the loop takes a last argument ``m`` and updates only the elements where ``m[i]``
    is nonzero (the parameters that have a gradient this step).

    ``codec``: ``(load, store)``, the names of two globals of the loop: ``p`` and ``g`` hold 16-bit
    patterns (float16 or bfloat16 viewed as uint16), and the loop takes ``w``, the float32 master
    weights, after the states. The rule runs in float32 on float32 states from the parameter
    ``w[i]`` if ``store(w[i]) == p[i]``, else ``load(p[i])`` (the 16-bit value was changed outside the
    step, or the master never set: it wins), and writes ``w[i] = new_p`` and ``p[i] = store(new_p)``.

    ``n_consts``: the device-scalar form (see the module docstring): ``def name(p, g, s0.., [w,] c0..,
    lr, step, inv_scale, found_inf, z[, m])``."""
    kept = sorted(i for i in slots if i is not None)
    s_args = [f"s{i}" for i in kept]
    h_args = [f"h{i}" for i in range(n_h)]
    device = n_consts is not None
    scalar_args = [f"c{k}" for k in range(n_consts)] + list(DEVICE_SCALARS) if device else h_args
    args = ", ".join(["p", "g"] + s_args + ([] if codec is None else ["w"]) + scalar_args + ["z"]
                     + (["m"] if masked else []))
    if device:
        header = header + "\n" + device_prelude(n_h, n_consts)
    pg = ["p[i]", "g[i]"] if codec is None else [f"(w[i] if {codec[1]}(w[i]) == p[i] else {codec[0]}(p[i]))",
                                                 f"{codec[0]}(g[i])"]
    if device:
        pg[1] += " * inv"
    call = ", ".join(pg + [("z" if k is None else f"s{k}[i]") for k in slots] + h_args)
    targets = ", ".join(["p[i]" if codec is None else "new_p"] + [("_" if k is None else f"s{k}[i]") for k in slots])
    step = [f"{targets} = fn({call})"] + ([] if codec is None else ["w[i] = new_p", f"p[i] = {codec[1]}(new_p)"])
    indent = " " * (12 if masked else 8)
    body = [f"def {name}({args}):", *[f"    {line}" for line in header.splitlines() if line],
            f"    for i in {index_range}:", *(["        if m[i]:"] if masked else []),
            *[indent + line for line in step]]
    return "\n".join(body) + "\n"
