"""CUDA C for the cupy target, translated from the rules' own scalar functions.

``kernel_source(rule, flags, dtype)`` reads the source of the function that
``rules.get(rule).math(flags, ...)`` returns, parses it with :mod:`ast` and
writes one ``extern "C" __global__`` grid-stride kernel per variant and dtype,
so the CUDA C never restates a rule. The variant flags are the function's
closure constants: an ``if`` (or conditional expression) on them is decided
here and only the branch taken is emitted; an ``if`` on a runtime value (SGD's
``first != 0``) becomes a C ``if``. ``host_source`` wraps the same translated
body in a plain C loop, so the tests can run it on the CPU.

Kernel parameters: ``(T* p, const T* g, T* s0.., long long n, T <hyper>_..)``
with one ``s<k>`` per state the variant keeps (``k`` as in
``rules.state_slots``) and the hypers in ``rule.hyper_names`` order. States the
variant does not keep start at 0 and are not stored, as in
``codegen.loop_source``. The masked form (``masked=True``, for steps in which
some parameters have no gradient) adds a last ``const unsigned char* m`` and
skips the elements where it is 0. For float16 and bfloat16 parameters ``T`` is
``float`` (states, hypers, arithmetic) and ``p``, ``g`` are ``unsigned short``
bit patterns, decoded and stored (rounded to nearest even) by ``CODEC_C``; the
states are followed by ``float* w``, the master weights the step reads and
writes (as ``codegen.loop_source`` states it: ``p`` rounded from the new master).

The device-scalar form (``device=True``, see ``codegen``) takes the group's
constants as ``double``s in place of the hypers, then ``const double* lr_dev,
const double* step_dev, const float* inv_scale, const float* found_inf``; it
returns at once when ``*found_inf`` is set, computes the hypers from the rule's
``hyper_math`` (translated here too, in double, ``**`` as ``pow``) at ``*lr_dev``
and ``*step_dev + 1``, and multiplies each gradient by ``*inv_scale``.
``check_source(dtype)`` is the found-inf check launch over a gradient buffer.

Only what the rules use is translated: assignments to names, one tuple return
at the end, ``if``/``else``, conditional expressions, unary minus, ``+ - * /``,
single comparisons, ``sqrt(x)``, ``maximum(a, b)`` and numeric literals.
Anything else raises ``NotImplementedError`` naming the construct and the rule.
"""
from __future__ import annotations

import ast
import functools
import inspect
import textwrap

import numpy as np

from . import rules

# parameter dtype: (compute C type, kernel-name suffix, sqrt); the 16-bit ones are stored as unsigned short
_CTYPES = {"float32": ("float", "f32", "sqrtf"), "float64": ("double", "f64", "sqrt"),
           "float16": ("float", "f16", "sqrtf"), "bfloat16": ("float", "bf16", "sqrtf")}
# the codecs of precision.codecs in C, with the same operations (see there): float16/bfloat16
# bits <-> float32, stores rounded to nearest even (NumPy's and ml_dtypes' casts, bit for bit)
CODEC_C = r"""
#ifndef BPG_HALF_CODECS
#define BPG_HALF_CODECS
#ifdef __CUDACC__
#define BPG_FN __device__ __forceinline__
BPG_FN float bpg_as_float(unsigned int u) { return __uint_as_float(u); }
BPG_FN unsigned int bpg_as_bits(float x) { return __float_as_uint(x); }
#else
#include <string.h>
#define BPG_FN static inline
BPG_FN float bpg_as_float(unsigned int u) { float x; memcpy(&x, &u, 4); return x; }
BPG_FN unsigned int bpg_as_bits(float x) { unsigned int u; memcpy(&u, &x, 4); return u; }
#endif
BPG_FN float bpg_f16_load(unsigned short h) {
  unsigned int u = h, o = ((u & 0x7FFFu) << 13) + 0x38000000u, e = u & 0x7C00u, sign = (u & 0x8000u) << 16;
  if (e == 0x7C00u) return bpg_as_float(sign | (o + 0x38000000u));  /* inf, NaN */
  if (e == 0u) return bpg_as_float(sign | bpg_as_bits(bpg_as_float(o + 0x00800000u) - 6.103515625e-05f));
  return bpg_as_float(sign | o);
}
BPG_FN unsigned short bpg_f16_store(float x) {
  unsigned int u = bpg_as_bits(x), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  return (unsigned short)(sign | (
      a >= 0x47800000u ? (a > 0x7F800000u ? 0x7E00u : 0x7C00u) :  /* NaN, inf, beyond 65520 */
      a < 0x38800000u ? bpg_as_bits(bpg_as_float(a) + 0.5f) - 0x3F000000u :  /* subnormal, zero */
      ((a + ((a >> 13) & 1u) + 0x08000FFFu) >> 13) - 0x20000u));  /* normal, ties to even */
}
BPG_FN float bpg_bf16_load(unsigned short h) { return bpg_as_float(((unsigned int)h) << 16); }
BPG_FN unsigned short bpg_bf16_store(float x) {
  unsigned int u = bpg_as_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)(((u >> 16) & 0x8000u) | 0x7FC0u);
  return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
#endif
"""
_DEVICE_LOOP = "for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; " \
               "i += (long long)blockDim.x * gridDim.x)"
_HOST_LOOP = "for (long long i = 0; i < n; ++i)"

# C operator precedences (higher binds tighter); Python's agree for the operators translated
_ATOM, _UNARY, _MUL, _ADD, _CMP, _COND = 100, 90, 80, 70, 50, 10
_BINOPS = {ast.Add: ("+", _ADD), ast.Sub: ("-", _ADD), ast.Mult: ("*", _MUL), ast.Div: ("/", _MUL)}
_CMPOPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class _Intrinsic:
    """Passed to ``Rule.math`` as ``sqrt``/``maximum`` so that calls are recognised by value, not by name."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        raise TypeError(f"cuda_source's {self.name} stands in for translation only")


SQRT, MAXIMUM = _Intrinsic("sqrt"), _Intrinsic("maximum")


def _mangle(name: str) -> str:
    # every Python name gets a trailing underscore: no clash with C keywords, CUDA built-ins
    # (blockIdx, std, ...) or the kernel's own p, g, s<k>, n, i
    return name + "_"


class _Translator:
    """The body of one rule variant's scalar function as C statements over ``ctype``."""

    def __init__(self, rule_name: str, flags: tuple, dtype: str):
        self.rule = rules.get(rule_name)
        self.ctype, _, self.sqrt = _CTYPES[dtype]
        # float16/bfloat16: p and g are 16-bit patterns, converted by the CODEC_C functions
        self.codec = {"float16": "bpg_f16", "bfloat16": "bpg_bf16"}.get(dtype)
        fn = self.rule.math(flags, SQRT, MAXIMUM)
        self.where = f"rule {rule_name!r} (function {fn.__name__!r})"
        self.consts = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        self.fdef = tree.body[0]
        a = self.fdef.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
            self._fail(self.fdef, "a signature other than plain positional parameters")
        self.params = [x.arg for x in a.args]
        n_states, n_hypers = len(self.rule.all_states), len(self.rule.hyper_names)
        if len(self.params) != 2 + n_states + n_hypers:
            raise ValueError(f"{self.where} takes {len(self.params)} parameters; expected p, g, "
                             f"{n_states} states and {n_hypers} hypers")
        self.states = self.params[2:2 + n_states]
        self.hypers = self.params[2 + n_states:]
        self.slots = rules.state_slots(rule_name, flags)
        self.scaled = False  # device form: each gradient multiplied by bpg_inv as it is loaded

    allow_pow = False

    def mangle(self, name: str) -> str:
        return _mangle(name)

    def _fail(self, node, what: str):
        raise NotImplementedError(f"cuda_source cannot translate {what} (line {getattr(node, 'lineno', '?')} of "
                                  f"the function) in {self.where}")

    # --- decisions taken at generation time ---------------------------------------------

    def _static(self, node):
        """``(True, value)`` if ``node`` depends only on closure constants and literals, else ``(False, None)``."""
        if isinstance(node, ast.Constant):
            return True, node.value
        if isinstance(node, ast.Name) and node.id in self.consts:
            return True, self.consts[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            ok, v = self._static(node.operand)
            return ok, (not v) if ok else None
        if isinstance(node, ast.BoolOp):
            vals = [self._static(x) for x in node.values]
            if all(ok for ok, _ in vals):
                pick = all if isinstance(node.op, ast.And) else any
                return True, pick(v for _, v in vals)
        return False, None

    def _flatten(self, stmts):
        """``stmts`` with every ``if`` on a closure constant replaced by the branch it takes."""
        out = []
        for s in stmts:
            if isinstance(s, ast.If):
                ok, v = self._static(s.test)
                if ok:
                    out.extend(self._flatten(s.body if v else s.orelse))
                    continue
                s = ast.If(test=s.test, body=self._flatten(s.body), orelse=self._flatten(s.orelse), lineno=s.lineno)
            out.append(s)
        return out

    # --- expressions -------------------------------------------------------------------------

    def literal(self, value) -> str:
        # cast from the double literal, as NumPy casts a Python float to float32 (NEP 50)
        return f"(({self.ctype}){float(value)!r})"

    def expr(self, node) -> tuple[str, int]:
        """(C text, precedence) of an expression."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self._fail(node, f"the literal {node.value!r}")
            return self.literal(node.value), _ATOM
        if isinstance(node, ast.Name):
            if node.id in self.consts:
                v = self.consts[node.id]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    self._fail(node, f"the closure value {node.id!r} = {v!r} inside an expression")
                return self.literal(v), _ATOM
            if node.id not in self.params and node.id not in self.assigned:
                self._fail(node, f"the global or undefined name {node.id!r}")
            return self.mangle(node.id), _ATOM
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            text, prec = self.expr(node.operand)
            if prec < _ATOM or text.startswith("-"):
                text = f"({text})"  # also keeps "- -x" from becoming the decrement "--x"
            return f"-{text}", _UNARY
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and self.allow_pow:
            return f"pow({self.expr(node.left)[0]}, {self.expr(node.right)[0]})", _ATOM
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            op, prec = _BINOPS[type(node.op)]
            (lt, lp), (rt, rp) = self.expr(node.left), self.expr(node.right)
            # floating point is not associative: a right operand of equal precedence keeps its parentheses
            lt = f"({lt})" if lp < prec else lt
            rt = f"({rt})" if rp <= prec else rt
            return f"{lt} {op} {rt}", prec
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in _CMPOPS:
                self._fail(node, "a chained comparison or a comparison other than == != < <= > >=")
            (lt, lp), (rt, rp) = self.expr(node.left), self.expr(node.comparators[0])
            lt = f"({lt})" if lp <= _CMP else lt
            rt = f"({rt})" if rp <= _CMP else rt
            return f"{lt} {_CMPOPS[type(node.ops[0])]} {rt}", _CMP
        if isinstance(node, ast.IfExp):
            ok, v = self._static(node.test)
            if ok:
                return self.expr(node.body if v else node.orelse)
            parts = [self.expr(x) for x in (node.test, node.body, node.orelse)]
            c, a, b = (f"({t})" if p <= _COND else t for t, p in parts)
            return f"{c} ? {a} : {b}", _COND
        if isinstance(node, ast.Call):
            return self.call(node), _ATOM
        self._fail(node, f"the expression {type(node).__name__} ({ast.unparse(node)!r})")

    def call(self, node) -> str:
        f = self.consts.get(node.func.id) if isinstance(node.func, ast.Name) else None
        if not isinstance(f, _Intrinsic) or node.keywords:
            self._fail(node, f"the call {ast.unparse(node)!r} (only sqrt(x) and maximum(a, b))")
        args = [self.expr(a) for a in node.args]
        if len(args) != (1 if f is SQRT else 2):
            self._fail(node, f"{f.name} with {len(args)} arguments")
        if f is SQRT:
            return f"{self.sqrt}({args[0][0]})"
        # np.maximum propagates NaN where fmax would drop it; this ternary does too
        a, b = (t if p == _ATOM else f"({t})" for t, p in args)
        return f"(({a} != {a} || {a} > {b}) ? {a} : {b})"

    # --- statements --------------------------------------------------------------------------

    def _assigned_in(self, stmts) -> list:
        names = []
        for s in stmts:
            if isinstance(s, ast.Assign):
                names += [t.id for t in s.targets if isinstance(t, ast.Name)]
            elif isinstance(s, ast.If):
                names += self._assigned_in(s.body) + self._assigned_in(s.orelse)
        return list(dict.fromkeys(names))

    def stmts(self, stmts, indent: str) -> list:
        lines = []
        for s in stmts:
            if isinstance(s, ast.Assign):
                if len(s.targets) != 1 or not isinstance(s.targets[0], ast.Name):
                    self._fail(s, "an assignment to anything but one plain name")
                name = s.targets[0].id
                if name in self.hypers:
                    # a grid-stride thread runs the body for several i: the change would leak into the next
                    self._fail(s, f"an assignment to the hyper parameter {name!r}")
                value = self.expr(s.value)[0]
                decl = "" if name in self.declared else f"{self.ctype} "
                self.declared.add(name)
                self.assigned.add(name)
                lines.append(f"{indent}{decl}{self.mangle(name)} = {value};")
            elif isinstance(s, ast.If):
                new = [n for n in self._assigned_in([s]) if n not in self.declared]
                if new:
                    lines.append(f"{indent}{self.ctype} {', '.join(map(self.mangle, new))};")
                    self.declared.update(new)
                lines.append(f"{indent}if ({self.expr(s.test)[0]}) {{")
                lines += self.stmts(s.body, indent + "  ")
                if s.orelse:
                    lines.append(f"{indent}}} else {{")
                    lines += self.stmts(s.orelse, indent + "  ")
                lines.append(f"{indent}}}")
            elif isinstance(s, ast.Return):
                self._fail(s, "a return before the end of the function or inside an if on a runtime value")
            else:
                self._fail(s, f"the statement {type(s).__name__}")
        return lines

    def body(self, indent: str) -> list:
        """Load p[i], g[i] and the states, run the function's statements, store p and the kept states."""
        stmts = self._flatten(self.fdef.body)
        if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant) \
                and isinstance(stmts[0].value.value, str):
            stmts = stmts[1:]  # docstring
        if not stmts or not isinstance(stmts[-1], ast.Return) or stmts[-1].value is None:
            self._fail(self.fdef, "a function that does not end in `return p, *states`")
        ret = stmts[-1].value
        values = ret.elts if isinstance(ret, ast.Tuple) else [ret]
        if len(values) != 1 + len(self.states):
            self._fail(ret, f"a return of {len(values)} values (expected p and {len(self.states)} states)")
        t = self.ctype
        used = {n.id for s in stmts for n in ast.walk(s) if isinstance(n, ast.Name)}
        # a state the variant does not keep is the constant 0, declared only where the body reads it
        loads = [(s, "" if k is None else f"s{k}[i]") for s, k in zip(self.states, self.slots)]
        loads = [(s, src or self.literal(0)) for s, src in loads if src or s in used]
        self.declared = {*self.params[:2], *(s for s, _ in loads), *self.hypers}
        self.assigned = set()
        load = (lambda a: a) if self.codec is None else (lambda a: f"{self.codec}_load({a})")
        # 16 bits: the float32 master weight where it rounds to p, else p (changed outside the step)
        p_in = "p[i]" if self.codec is None else f"({self.codec}_store(w[i]) == p[i] ? w[i] : {load('p[i]')})"
        lines = [f"{indent}{t} {_mangle(self.params[0])} = {p_in};",
                 f"{indent}{t} {_mangle(self.params[1])} = {load('g[i]')}{' * bpg_inv' if self.scaled else ''};"]
        lines += [f"{indent}{t} {_mangle(s)} = {src};" for s, src in loads]
        lines += self.stmts(stmts[:-1], indent)
        outs = ["p"] + [None if k is None else f"s{k}" for k in self.slots]
        exprs = [self.expr(v)[0] for v in values]
        if self.codec is not None:  # the new master weight, and p its rounding
            lines.append(f"{indent}const {t} bpg_new_p = {exprs[0]};")
            outs, exprs = ["w"] + outs, ["bpg_new_p", f"{self.codec}_store(bpg_new_p)"] + exprs[1:]
        lines += [f"{indent}{o}[i] = {e};" for o, e in zip(outs, exprs) if o is not None]
        return lines

    def signature(self, name: str, masked: bool, device: "_HyperTranslator | None" = None) -> str:
        t = self.ctype
        kept = sorted(k for k in self.slots if k is not None)
        pt = t if self.codec is None else "unsigned short"
        if device is None:
            scalars = [f"{t} {_mangle(h)}" for h in self.hypers]
        else:
            scalars = [f"double {device.mangle(c)}" for c in device.params[2:]] + \
                ["const double* lr_dev", "const double* step_dev", "const float* inv_scale", "const float* found_inf"]
        master = [] if self.codec is None else [f"{t}* w"]
        args = [f"{pt}* p", f"const {pt}* g", *[f"{t}* s{k}" for k in kept], *master, "long long n", *scalars,
                *(["const unsigned char* m"] if masked else [])]
        return f"void {name}({', '.join(args)})"


class _HyperTranslator(_Translator):
    """A rule's ``hyper_math`` function as C statements over ``double``: the device form's prelude."""

    allow_pow = True

    def __init__(self, rule_name: str, flags: tuple):
        self.rule = rules.get(rule_name)
        self.ctype, self.sqrt, self.codec = "double", "sqrt", None
        fn = self.rule.hyper_math(flags)
        self.where = f"rule {rule_name!r} (function {fn.__name__!r})"
        self.consts = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
        self.fdef = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        a = self.fdef.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
            self._fail(self.fdef, "a signature other than plain positional parameters")
        self.params = [x.arg for x in a.args]
        if len(self.params) != 2 + len(self.rule.const_names):
            raise ValueError(f"{self.where} takes {len(self.params)} parameters; expected lr, step and "
                             f"{len(self.rule.const_names)} constants")
        self.hypers = ()  # nothing here is a kernel parameter that must not be assigned

    def mangle(self, name: str) -> str:
        # apart from the rule body's names (SGD's hyper ``lr`` is also this function's parameter)
        return f"hp_{name}_"

    def prelude(self, out_ctype: str, indent: str) -> list:
        """Declare the hypers (``const <out_ctype> <name>_``) from ``*lr_dev`` and ``*step_dev + 1``."""
        stmts = self._flatten(self.fdef.body)
        if not stmts or not isinstance(stmts[-1], ast.Return) or stmts[-1].value is None:
            self._fail(self.fdef, "a function that does not end in `return <hypers>`")
        ret = stmts[-1].value
        values = ret.elts if isinstance(ret, ast.Tuple) else [ret]
        if len(values) != len(self.rule.hyper_names):
            self._fail(ret, f"a return of {len(values)} values (expected {len(self.rule.hyper_names)} hypers)")
        self.declared, self.assigned = set(self.params), set()
        lr, step = (self.mangle(x) for x in self.params[:2])
        lines = [f"{indent}const double {lr} = lr_dev[0], {step} = step_dev[0] + 1.0;  // the count after this step"]
        lines += self.stmts(stmts[:-1], indent)
        lines += [f"{indent}const {out_ctype} {_mangle(h)} = ({out_ctype})({self.expr(v)[0]});"
                  for h, v in zip(self.rule.hyper_names, values)]
        return lines


def kernel_name(rule_name: str, flags: tuple, dtype, masked: bool = False, device: bool = False) -> str:
    """The variant's entry point, e.g. ``bpg_adam_100_f32`` (flags as bits; ``_m`` appended when masked,
    ``_d`` for the device-scalar form)."""
    bits = "".join("1" if f else "0" for f in flags) or "x"
    return f"bpg_{rule_name}_{bits}_{_CTYPES[_dtype(dtype)][1]}{'_m' if masked else ''}{'_d' if device else ''}"


def _dtype(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.name not in _CTYPES or not dtype.isnative:
        raise TypeError(f"the generated CUDA C optimizer kernels support {', '.join(_CTYPES)} (native byte "
                        f"order), not {dtype.str} ({dtype.name})")
    return dtype.name


@functools.lru_cache(maxsize=None)
def _source(rule_name: str, flags: tuple, dtype: str, host: bool, masked: bool,
            device: bool = False) -> tuple[str, str]:
    tr = _Translator(rule_name, flags, dtype)
    name = kernel_name(rule_name, flags, dtype, masked, device)
    head = f"// {rule_name}, flags {flags}, {dtype}: generated by backprop_gpu.array.optim.cuda_source from " \
           f"rules.{type(tr.rule).__name__}.math\n"
    if tr.codec is not None:
        head += CODEC_C.lstrip("\n")
    ht = _HyperTranslator(rule_name, flags) if device else None
    sig = tr.signature(name, masked, ht)
    if host:
        text = head + f"#include <math.h>\n{sig} {{\n"
    else:
        text = head + f'extern "C" __global__ {sig} {{\n'
    if device:
        tr.scaled = True
        text += "  if (found_inf[0] != 0.0f) return;  // GradScaler saw an inf or NaN: the step is skipped\n"
        text += "\n".join(ht.prelude(tr.ctype, "  ")) + "\n"
        text += f"  const {tr.ctype} bpg_inv = ({tr.ctype})inv_scale[0];\n"
    text += f"  {_HOST_LOOP if host else _DEVICE_LOOP} {{\n"
    skip = ["    if (!m[i]) continue;  // a parameter without a gradient this step"] if masked else []
    return name, text + "\n".join(skip + tr.body("    ")) + "\n  }\n}\n"


def kernel_source(rule_name: str, flags: tuple, dtype, masked: bool = False, device: bool = False) -> tuple[str, str]:
    """``(name, source)``: one ``extern "C" __global__`` grid-stride kernel for the variant, for NVRTC.

    ``masked``: a last parameter ``const unsigned char* m``; elements where it is 0 are left alone.
    ``device``: the device-scalar form (see the module docstring)."""
    return _source(rule_name, tuple(bool(f) for f in flags), _dtype(dtype), False, bool(masked), bool(device))


def host_source(rule_name: str, flags: tuple, dtype, masked: bool = False, device: bool = False) -> tuple[str, str]:
    """``(name, source)``: the same translated body in a C99 function looping over ``i < n`` (for tests)."""
    return _source(rule_name, tuple(bool(f) for f in flags), _dtype(dtype), True, bool(masked), bool(device))


@functools.lru_cache(maxsize=None)
def check_source(dtype) -> tuple[str, str]:
    """``(name, source)``: the found-inf check, ``void name(const T* g, long long n, float* found_inf)``,
    one grid-stride launch setting ``*found_inf = 1`` if any element is inf or NaN (``rules.nonfinite``:
    ``x - x`` is NaN exactly then). Threads only ever write 1, so their race is harmless."""
    dtype = _dtype(dtype)
    ctype, suffix, _ = _CTYPES[dtype]
    codec = {"float16": "bpg_f16", "bfloat16": "bpg_bf16"}.get(dtype)
    gt, load = (ctype, "g[i]") if codec is None else ("unsigned short", f"{codec}_load(g[i])")
    name = f"bpg_nonfinite_{suffix}"
    src = (f"// the found-inf check for {dtype} gradients: generated by backprop_gpu.array.optim.cuda_source\n"
           + (CODEC_C.lstrip("\n") if codec else "")
           + f'extern "C" __global__ void {name}(const {gt}* g, long long n, float* found_inf) {{\n'
           f"  int bad = 0;\n  {_DEVICE_LOOP} {{\n    const {ctype} x = {load};\n"
           f"    if (!(x - x == ({ctype})0)) bad = 1;\n  }}\n  if (bad) found_inf[0] = 1.0f;\n}}\n")
    return name, src
