"""Source for the loops that call a rule's scalar function once per element.

A rule's function takes all of its states; a variant keeps only some (see
``rules.state_slots``), so the loop passes a zero for the others and drops
them on return. The math itself is never restated here.
"""
from __future__ import annotations

import inspect


def n_hypers(fn, n_all_states: int) -> int:
    """How many per-step scalars ``fn`` takes after p, g and its states."""
    return len(inspect.signature(fn).parameters) - 2 - n_all_states


def loop_source(name: str, slots: list, n_h: int, header: str, index_range: str, masked: bool = False,
                codec: tuple | None = None) -> str:
    """``def name(p, g, s0.., h0.., z)``: for each i, ``p[i], s[i].. = fn(p[i], g[i], ..)``.

    ``masked``: the loop takes a last argument ``m`` and updates only the elements where ``m[i]``
    is nonzero (the parameters that have a gradient this step).

    ``codec``: ``(load, store)``, the names of two globals of the loop: ``p`` and ``g`` hold 16-bit
    patterns (float16 or bfloat16 viewed as uint16), read as ``load(p[i])`` (a float32) and written
    back as ``p[i] = store(new_p)``, so the rule runs in float32 on float32 states."""
    kept = sorted(i for i in slots if i is not None)
    s_args = [f"s{i}" for i in kept]
    h_args = [f"h{i}" for i in range(n_h)]
    args = ", ".join(["p", "g"] + s_args + h_args + ["z"] + (["m"] if masked else []))
    pg = ["p[i]", "g[i]"] if codec is None else [f"{codec[0]}(p[i])", f"{codec[0]}(g[i])"]
    call = ", ".join(pg + [("z" if k is None else f"s{k}[i]") for k in slots] + h_args)
    targets = ", ".join(["p[i]" if codec is None else "new_p"] + [("_" if k is None else f"s{k}[i]") for k in slots])
    step = [f"{targets} = fn({call})"] + ([] if codec is None else [f"p[i] = {codec[1]}(new_p)"])
    indent = " " * (12 if masked else 8)
    body = [f"def {name}({args}):", *[f"    {line}" for line in header.splitlines() if line],
            f"    for i in {index_range}:", *(["        if m[i]:"] if masked else []),
            *[indent + line for line in step]]
    return "\n".join(body) + "\n"
