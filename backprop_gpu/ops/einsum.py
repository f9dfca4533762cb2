"""``torch.einsum``, forward beside VJP: each operand's gradient is another einsum.

The equation is parsed once into explicit form (``...`` replaced by letters, the implicit output
written out), so forward and VJP see only plain subscripts. The gradient of operand ``k`` is the
einsum of the output gradient with the other operands into ``k``'s distinct letters; letters only
``k`` has (summed away in forward) are broadcast back, size-1 dimensions that broadcast in forward
are summed back, and a letter repeated within ``k`` (a diagonal, ``'ii->i'``) is written onto that
diagonal of zeros.
"""
from __future__ import annotations

import string

import numpy as np

from ..array.dtypes import is_bfloat16
from ..tape.op import Op, apply, constant_like
from ..tape.tensor import Tensor

_LETTERS = string.ascii_letters


def _einsum(F, eq, *operands):
    if is_bfloat16(operands[0].dtype):  # NumPy's einsum has no bfloat16 loop
        return _einsum(F, eq, *[o.astype(np.float32) for o in operands]).astype(operands[0].dtype)
    # NumPy's default computes in one C loop; with a path (optimize) it uses BLAS where it can
    if F.records:
        return F.einsum(eq, *operands)
    return F.einsum(eq, *operands, optimize=len(operands) > 2)


def _parse(equation: str, shapes):
    """``(in_terms, out_term, sizes)``: explicit subscripts per operand and for the output (no
    ``...``), and each letter's size (the broadcast of its sizes). Torch's errors on bad input."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) > len(shapes):
        raise RuntimeError(f"einsum(): fewer operands were provided than specified in the equation "
                           f"{equation!r} ({len(shapes)} given)")
    if len(terms) < len(shapes):
        raise RuntimeError(f"einsum(): more operands were provided than specified in the equation "
                           f"{equation!r} ({len(shapes)} given)")
    for pos, c in enumerate(eq):
        if c not in _LETTERS and c not in ",.->":
            raise RuntimeError(f"einsum(): invalid subscript given at index {pos} in the equation string "
                               f"{equation!r}, subscripts must be in [a-zA-Z]")
    for t in terms + ([rhs] if arrow else []):
        if t.replace("...", "").count(".") or t.count("...") > 1 or "-" in t or ">" in t:
            raise RuntimeError(f"einsum(): invalid equation {equation!r}: '.' only as one '...' per term, "
                               "and one '->'")
    used = set(eq)
    fresh = [c for c in _LETTERS if c not in used]
    n_ell = 0
    for k, (t, shape) in enumerate(zip(terms, shapes)):
        n = len(t.replace("...", ""))
        if "..." not in t and n != len(shape):
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({n}) does not match the "
                               f"number of dimensions ({len(shape)}) for operand {k} and no ellipsis was given")
        if "..." in t and n > len(shape):
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({n}) is more than the "
                               f"number of dimensions ({len(shape)}) for operand {k}")
        if "..." in t:
            n_ell = max(n_ell, len(shape) - n)
    if n_ell > len(fresh):
        raise RuntimeError(f"einsum(): too many dimensions for the letters left in {equation!r}")
    ell = "".join(fresh[:n_ell])
    in_terms = []
    for t, shape in zip(terms, shapes):
        e = len(shape) - len(t.replace("...", ""))
        in_terms.append(t.replace("...", ell[n_ell - e:]) if "..." in t else t)
    if arrow:
        out_term = rhs.replace("...", ell)
        for c in out_term:
            if out_term.count(c) > 1:
                raise RuntimeError(f"einsum(): output subscript {c} appears more than once in the output")
            if not any(c in t for t in in_terms):
                raise RuntimeError(f"einsum(): output subscript {c} does not appear in the equation for any "
                                   "input operand")
    else:  # implicit: the broadcast dimensions, then the letters seen once, alphabetically
        joined = "".join(terms).replace("...", "")
        out_term = ell + "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    sizes = {}
    for k, (t, shape) in enumerate(zip(in_terms, shapes)):
        for c, n in zip(t, shape):
            seen = sizes.get(c, 1)
            if n != seen and n != 1 and seen != 1:
                raise RuntimeError(f"einsum(): subscript {c} has size {n} for operand {k} which does not "
                                   f"broadcast with previously seen size {seen}")
            sizes[c] = max(seen, n) if n and seen else 0
    return tuple(in_terms), out_term, sizes


class Einsum(Op):
    name = "einsum"
    saves = ("operands",)

    @staticmethod
    def forward(F, *operands, in_terms, out_term):
        return _einsum(F, ",".join(in_terms) + "->" + out_term, *operands)

    @staticmethod
    def vjp(F, g, out, *operands, in_terms, out_term, needs):
        grads = []
        for k, (term, x) in enumerate(zip(in_terms, operands)):
            if not needs[k]:
                grads.append(None)
                continue
            others = [in_terms[j] for j in range(len(in_terms)) if j != k]
            elsewhere = set(out_term).union(*others)
            letters = list(dict.fromkeys(term))  # distinct, in order
            size = {c: n for c, n in zip(term, x.shape)}
            kept = "".join(c for c in letters if c in elsewhere)
            gk = _einsum(F, ",".join([out_term] + others) + "->" + kept, g,
                         *[operands[j] for j in range(len(operands)) if j != k])
            # the letters only this operand has come back as size-1 axes, broadcast below
            gk = F.reshape(gk, tuple(gk.shape[kept.index(c)] if c in kept else 1 for c in letters))
            wide = tuple(i for i, c in enumerate(letters) if size[c] == 1 and gk.shape[i] != 1)
            if wide:  # this operand broadcast along these: sum back
                gk = F.sum(gk, axis=wide, keepdims=True)
            gk = F.broadcast_to(gk, tuple(size[c] for c in letters))
            if len(letters) < len(term):  # a repeated letter: the gradient sits on its diagonal
                xp = g.backend.xp if F.records else F
                key = tuple(xp.arange(size[c]).reshape([size[c] if j == letters.index(c) else 1
                                                        for j in range(len(letters))]) for c in term)
                gk = F.index_backward(gk, tuple(x.shape), key)
            grads.append(gk)
        return tuple(grads)


def _from_sublists(args):
    """``(equation, operands)`` of torch's sublist form: operand, subscripts, ..., [output]."""
    def term(sub):
        out = []
        for v in sub:
            if v is Ellipsis:
                out.append("...")
            elif isinstance(v, int) and 0 <= v < len(_LETTERS):
                out.append(_LETTERS[v])
            else:
                raise RuntimeError(f"einsum(): subscript in sublist format must be an int in [0, {len(_LETTERS)}) "
                                   f"or Ellipsis, got {v!r}")
        return "".join(out)

    pairs, rest = args[:len(args) // 2 * 2], args[len(args) // 2 * 2:]
    operands = pairs[0::2]
    for sub in pairs[1::2]:
        if not isinstance(sub, (list, tuple)):
            raise TypeError(f"einsum(): expected operand, subscript list pairs, got {type(sub).__name__} where a "
                            "subscript list belongs")
    equation = ",".join(term(sub) for sub in pairs[1::2])
    if rest:
        equation += "->" + term(rest[0])
    return equation, operands


def einsum(equation, *operands):
    """``torch.einsum``: the sum of products over the subscripts in ``equation`` (``'ij,jk->ik'``;
    ``...`` for broadcast dimensions; without ``->`` the output is the broadcast dimensions and then
    the subscripts seen once, alphabetically). The operands may also come as one list
    (``einsum(eq, [a, b])``), or in torch's sublist form, ``einsum(a, [0, 1], b, [1, 2], [0, 2])``
    (subscripts as ints in [0, 52), ``...`` as ``Ellipsis``). Differentiable in every operand."""
    if not isinstance(equation, str):
        equation, operands = _from_sublists((equation,) + operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise RuntimeError("einsum(): must provide at least one operand")
    ref = next((t for t in operands if isinstance(t, Tensor)), None)
    if ref is None:
        raise TypeError("einsum() needs at least one tensor operand")
    operands = tuple(constant_like(t, ref) for t in operands)
    in_terms, out_term, _ = _parse(equation, [t.shape for t in operands])
    return apply(Einsum, *operands, in_terms=in_terms, out_term=out_term)


__all__ = ["einsum"]
