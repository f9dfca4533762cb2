"""The Optimizer base: parameter groups, flat buffers, one fused launch per step.

Subclasses name a rule from :mod:`backprop_gpu.optim.rules` and validate
their hyperparameters; the per-element math lives only in the rule.

Parameters are re-bound to views of one flat buffer per (group, device,
dtype) when the optimizer is built, and their ``.grad`` to views of a flat
gradient buffer (invisible to correct programs: values, shapes and in-place
semantics are the parameters' own).

As in ``torch.optim``, a parameter whose ``.grad`` is ``None`` at a step (it
took no part in the loss, or was frozen with ``requires_grad_(False)``) is
skipped: not moved, not decayed, its state and step count untouched. Each
parameter keeps its own step count. A step is one launch per flat buffer
when every parameter has a gradient; otherwise one masked launch per
distinct step count among those that do (one, unless some were skipped
before), never a loop over parameters.

Device scalars. A group built with ``capturable=True``, and every group of an
optimizer once a ``GradScaler`` has stepped it, keeps its learning rate and
step counts in 1-element float64 arrays on the buffers' device and launches the
device-scalar form of the fused kernels (``backprop_gpu.array.optim``): the
kernel reads ``lr`` and ``step``, computes the bias corrections and other
per-step scalars itself, multiplies each gradient by the scaler's ``inv_scale``
and skips the whole step if the scaler's ``found_inf`` is set; the optimizer
then adds ``1 - found_inf`` to the count, on the device. Per flat buffer a step
is then the update launch plus that one addition, and no host value enters it:
``group["lr"]`` (a float, as schedulers set it) is written into the device lr by
a ``fill`` launch only in the steps after it changed. The counts of parameters
that took every step together share one device count (a "class"); a step in
which only some of a class have a gradient splits it (one device copy), and
each class is one masked launch, as distinct host counts are above.
``state_dict`` reads the counts back (a sync, off the hot path); capturable
groups save ``step`` as a float32 tensor, as torch's capturable optimizers do.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from ..tape.mode import enable_grad, no_grad
from ..tape.tensor import Tensor
from ..array import get_backend
from ..array.devices import gpu_array_device
from ..array.optim import rules as _rules
from ..array.optim.precision import compute_dtype, native
from .flat import FlatGroup

log = logging.getLogger("backprop_gpu")

#: the state name of the float32 master weights of float16/bfloat16 parameters
MASTER = "master_param"


def _as_count(step):
    """A saved step count as an int (torch saves it as a 0-d tensor), or None if it is not one."""
    if hasattr(step, "item") and int(np.prod(tuple(getattr(step, "shape", ())))) == 1:
        step = step.item()  # a one-element tensor or array: ours, NumPy's or torch's (whose .size is a method)
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        return None
    return int(step)


def _check_dtype(p: Tensor, index: int, group: int | None = None) -> None:
    """TypeError naming the parameter and its dtype if the fused kernels cannot step it."""
    try:
        compute_dtype(native(p.dtype))
    except TypeError:
        where = f"parameter {index}" + ("" if group is None else f" (in param group {group})")
        raise TypeError(f"optimizer {where} of shape {p.shape} has dtype {p.dtype}; optimizers step "
                        f"float16, bfloat16, float32 and float64 parameters") from None



def _host_array(v) -> np.ndarray:
    """A state entry's values on the host (loading only): a tensor's, a raw CuPy array's (explicitly
    copied: CuPy refuses np.asarray), or anything np.asarray takes."""
    if isinstance(v, Tensor):
        return v.numpy()
    if gpu_array_device(v) is not None and hasattr(v, "get"):
        return v.get()
    return np.asarray(v)


class _DeviceSteps:
    """Step counts on the device: one float64 count per class of parameters that stepped together."""

    __slots__ = ("cls", "counts", "views", "n")

    def __init__(self, flat: FlatGroup, host_steps: np.ndarray):
        # one class per distinct host count (one, usually), uploaded once
        values, self.cls = np.unique(host_steps, return_inverse=True)
        self.n = len(values)
        counts = np.zeros(len(host_steps), dtype=np.float64)
        counts[:self.n] = values
        self.counts = flat.backend.asarray(counts)
        self.views = {}

    def view(self, c: int):
        """Class ``c``'s count as a 1-element view of :attr:`counts` (made once)."""
        v = self.views.get(c)
        if v is None:
            v = self.views[c] = self.counts[c:c + 1]
        return v

    def split(self, which: np.ndarray, c: int) -> int:
        """Move the parameters ``which`` of class ``c`` into a new class with the same count (a device copy)."""
        new = self.n
        self.n += 1
        self.view(new)[...] = self.view(c)
        self.cls[which] = new
        return new

    def host(self) -> np.ndarray:
        """Each parameter's count as host integers (a device-to-host read)."""
        return _host_array(self.counts)[self.cls].astype(np.int64)


class _Flat:
    """One flat buffer of a param group, with its optimizer state and step count."""

    __slots__ = ("flat", "states", "steps", "flags", "masks", "dev", "lr", "lr_value")

    def __init__(self, flat: FlatGroup):
        self.flat = flat
        self.states: dict[str, object] = {}
        self.steps = np.zeros(len(flat.params), dtype=np.int64)  # per parameter, as torch.optim counts
        self.flags = None
        self.masks: dict[bytes, object] = {}  # element masks on the device, by parameter selection
        self.dev = None  # _DeviceSteps once the buffer steps with device scalars (steps then stale)
        self.lr = None  # the device learning rate, and the host value last written into it
        self.lr_value = None

    def host_steps(self) -> np.ndarray:
        """Each parameter's step count on the host (read back from the device in device-scalar mode)."""
        return self.steps if self.dev is None else self.dev.host()

    def device_lr(self, lr: float):
        """The 1-element float64 device lr holding ``lr``: a fill launch only when ``lr`` changed."""
        if self.lr is None:
            self.lr = self.flat.backend.xp.zeros(1, dtype=np.float64)
            self.lr_value = 0.0
        if lr != self.lr_value:
            self.lr.fill(float(lr))
            self.lr_value = lr
        return self.lr

    def mask(self, which: np.ndarray):
        """The device mask selecting parameters ``which`` (cached: frozen sets rarely change)."""
        key = which.tobytes()
        m = self.masks.get(key)
        if m is None:
            if len(self.masks) >= 8:
                self.masks.clear()
            m = self.masks[key] = self.flat.element_mask(which)
        return m


class Optimizer:
    """Base class for every optimizer (see the module docstring for how we differ from PyTorch)."""

    rule_name: str = ""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self._flats: list[list[_Flat]] = []
        self._scaled = False  # a GradScaler stepped this optimizer: every group uses device scalars
        self._units: dict = {}  # per device: (inv_scale 1, found_inf 0, one) when no scaler drives the step
        self._grad_scaling = None  # {device: (inv_scale, found_inf)} while a GradScaler runs step()
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors or of dicts, not a single tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # -- groups -------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (with its own hyperparameters); it gets its own flat buffers."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a param group needs a 'params' entry")
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        first = len(seen)  # parameters are numbered across groups, as in state_dict
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer params must be Tensors, got {type(p).__name__}")
            _check_dtype(p, first + i, len(self.param_groups))
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf tensor (shape {p.shape}); pass leaves, such as "
                                 f"module parameters or tensors made with requires_grad=True")
            if id(p) in seen:
                raise ValueError(f"a parameter of shape {p.shape} appears in more than one param group")
            seen.add(id(p))
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._validate(group)
        group["params"] = params
        self.param_groups.append(group)
        self._flats.append(self._flatten(params))

    @staticmethod
    def _flatten(params) -> list[_Flat]:
        buckets: dict[tuple, list] = {}
        for i, p in enumerate(params):
            _check_dtype(p, i)  # before any FlatGroup rebinds a parameter (a rebuild after p.data = ...)
            # by native dtype: '>f4' and '<f4' parameters share one buffer (native, converted once)
            buckets.setdefault((str(p.device), p.backend.name, native(p.dtype).str), []).append(p)
        return [_Flat(FlatGroup(ps)) for ps in buckets.values()]

    @property
    def flat_groups(self) -> list[FlatGroup]:
        """Every flat buffer (for one all-reduce per buffer in data-parallel training)."""
        for gi in range(len(self.param_groups)):
            self._sync(gi)
        return [f.flat for fl in self._flats for f in fl]

    def _sync(self, gi: int) -> None:
        """Pull replaced parameters or gradients back into the flat buffers; rebuild if shapes moved."""
        for f in self._flats[gi]:
            if not f.flat.sync():
                warnings.warn("a parameter changed shape, dtype or device since the optimizer was built; "
                              "re-flattening its group (state is kept where shapes still match)",
                              RuntimeWarning, stacklevel=3)
                self._rebuild(gi)
                return

    def _rebuild(self, gi: int) -> None:
        old = self._state_of_group(gi)
        self._flats[gi] = self._flatten(self.param_groups[gi]["params"])
        self._restore_group(gi, old, strict=False)

    # -- hyperparameters ----------------------------------------------------------------
    def _validate(self, group: dict) -> None:
        """Raise ValueError for hyperparameters the rule cannot take."""
        _rules.get(self.rule_name).validate(group)
        if not isinstance(group.get("capturable", False), (bool, np.bool_)):
            raise ValueError(f"capturable must be True or False, got {group['capturable']!r}")

    # -- step ---------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients to ``None`` (default, as PyTorch) or, with ``set_to_none=False``, to zeros.

        Either way the next backward writes into the flat gradient buffer.
        """
        for gi in range(len(self._flats)):
            self._sync(gi)
            for f in self._flats[gi]:
                f.flat.zero_grad(set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient (see the module docstring for the launches)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        rule = _rules.get(self.rule_name)
        scaling = self._grad_scaling
        if scaling is not None:
            self._scaled = True
        oks = {}  # per device: 1 - found_inf, what this step adds to the device step counts
        with no_grad():
            for gi, group in enumerate(self.param_groups):
                self._sync(gi)
                flags = rule.flags(group)
                for f in self._flats[gi]:
                    self._ensure_state(f, rule, flags, group)
                    if self._scaled or group.get("capturable", False):
                        self._step_flat_device(f, rule, flags, group, scaling, oks)
                    else:
                        self._step_flat(f, rule, flags, group)
        return loss

    def _step_flat(self, f: _Flat, rule, flags, group) -> None:
        has = np.array(f.flat.has_grad())
        if not has.any():
            return
        dtype = f.flat.state_dtype.type  # float32 for float16/bfloat16: eps=1e-8 would be 0 in float16
        states = self._kernel_states(f, rule, flags)
        for step in np.unique(f.steps[has]):
            which = has & (f.steps == step)
            hypers = tuple(dtype(h) for h in rule.hypers(group, int(step) + 1, flags))
            mask = None if which.all() else f.mask(which)
            f.flat.backend.fused_update(self.rule_name, flags, f.flat.data, f.flat.grad, states, hypers, mask)
        f.steps[has] += 1
        f.flat.bump_versions(None if has.all() else has)

    def _scalars_for(self, b, scaling, oks) -> tuple:
        """``(inv_scale, found_inf, one_minus_found)`` on backend ``b``'s device for this step."""
        key = b.device
        if scaling is None:
            unit = self._units.get(key)
            if unit is None:
                xp = b.xp
                unit = self._units[key] = (xp.ones(1, dtype=np.float32), xp.zeros(1, dtype=np.float32),
                                           xp.ones(1, dtype=np.float64))
            return unit
        try:
            inv, found = scaling[key]
        except KeyError:
            raise RuntimeError(f"GradScaler recorded no found-inf flag for device {key}, where this optimizer "
                               f"has parameters") from None
        ok = oks.get(key)
        if ok is None:
            ok = self._units.get(("ok", key))
            if ok is None:
                ok = self._units[("ok", key)] = b.xp.zeros(1, dtype=np.float64)
            b.xp.subtract(1.0, found, out=ok)  # one launch per device and step
            oks[key] = ok
        return inv, found, ok

    def _step_flat_device(self, f: _Flat, rule, flags, group, scaling, oks) -> None:
        """The device-scalar step of one buffer: per class of step counts, one (masked) fused launch that
        reads lr, step, inv_scale and found_inf on the device, then the count's increment there."""
        has = np.array(f.flat.has_grad())
        if not has.any():
            return
        b = f.flat.backend
        if f.dev is None:
            f.dev = _DeviceSteps(f.flat, f.steps)
        d = f.dev
        inv, found, ok = self._scalars_for(b, scaling, oks)
        lr = f.device_lr(group["lr"])
        consts = rule.consts(group)
        states = self._kernel_states(f, rule, flags)
        for c in np.unique(d.cls[has]):
            members = d.cls == c
            which = has & members
            if (which != members).any():  # some of the class have no gradient: they part ways here
                c = d.split(which, int(c))
            mask = None if which.all() else f.mask(which)
            count = d.view(int(c))
            b.fused_update(self.rule_name, flags, f.flat.data, f.flat.grad, states, consts, mask,
                           (lr, count, inv, found))
            count += ok  # after the launch that read it: no thread reads the count while it changes
        f.flat.bump_versions(None if has.all() else has)

    @staticmethod
    def _kernel_states(f: _Flat, rule, flags) -> tuple:
        """The fused kernel's state buffers: the rule's, then the master weights of a 16-bit buffer."""
        states = tuple(f.states[n] for n in rule.state_names(flags))
        return states + (f.states[MASTER],) if f.flat.low else states

    @staticmethod
    def _ensure_state(f: _Flat, rule, flags, group) -> None:
        if f.flags == flags:
            return
        for name, fill in rule.state_init(flags, group):
            if name not in f.states:
                f.states[name] = f.flat.new_state(fill)
        if f.flat.low and MASTER not in f.states:
            f.states[MASTER] = f.flat.master_weights()
        f.flags = flags

    # -- state_dict ---------------------------------------------------------------
    def _state_of_group(self, gi: int) -> list[dict]:
        """Per-parameter state (host copies) of group ``gi``, in parameter order."""
        out = {}
        for f in self._flats[gi]:
            steps = f.host_steps()
            for i, p in enumerate(f.flat.params):
                st = {"step": int(steps[i])}
                for name, arr in f.states.items():
                    st[name] = Tensor._make(f.flat.slice_of(arr, i).copy(), f.flat.backend)
                out[id(p)] = st
        return [out[id(p)] for p in self.param_groups[gi]["params"]]

    def state_dict(self) -> dict:
        """PyTorch's layout: ``{"state": {index: {"step": int, name: Tensor}}, "param_groups": [...]}``.

        Parameters are numbered across groups in order; tensors are copies.
        """
        state, groups, idx = {}, [], 0
        for gi, group in enumerate(self.param_groups):
            self._sync(gi)
            ids = []
            for st in self._state_of_group(gi):
                if st["step"] > 0:  # as torch.optim: a parameter never stepped has no state
                    if group.get("capturable", False):  # torch's capturable optimizers save a float32 tensor
                        st["step"] = Tensor._make(np.array(st["step"], dtype=np.float32), get_backend("numpy"))
                    state[idx] = st
                ids.append(idx)
                idx += 1
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = ids
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`, all or nothing.

        Everything is checked first, by :meth:`check_state_dict`: group and parameter counts,
        every hyperparameter (with the constructor's own validation, so an ``lr`` of -1 is
        refused), step counts, the moments those steps imply, and each state tensor's shape.
        Any problem raises ValueError naming the entry, and the optimizer is left exactly as it
        was. State tensors are cast to the dtype the state is kept in (the parameter's, or float32
        for half-precision parameters), as ``torch.optim`` casts them to the parameter's.
        """
        plan = self.check_state_dict(state_dict)
        for gi, (hypers, per_param) in enumerate(plan):  # nothing below can fail on checked input
            self.param_groups[gi].update(hypers)
            self._sync(gi)
            self._restore_group(gi, per_param, strict=True)

    def check_state_dict(self, state_dict: dict, *, same_dtype: bool = False) -> list:
        """Check ``state_dict`` against this optimizer, changing nothing.

        Returns what :meth:`load_state_dict` applies: per group, ``(hyperparameters,
        per-parameter state)``, the state as host arrays in the parameters' dtypes. Raises
        ValueError naming the first bad entry; the error's ``entry`` attribute holds its path
        (``("param_groups", 0, "lr")``, ``("state", 3, "exp_avg")``) and ``reason`` the bare
        reason, so that callers such as :func:`backprop_gpu.app.checkpoint.restore` can name the
        entry their own way. Checked:

        * the number of groups and of parameters in each; parameter indices (unique integers)
          and that every state entry belongs to one of them;
        * each hyperparameter: one this optimizer has, of the same kind (flag, number, pair),
          finite, and accepted by the constructor's validation (alone and with the others);
          ``initial_lr`` (a scheduler's) must be a valid learning rate. torch's implementation
          switches (``foreach``, ``fused``, ``differentiable``) are accepted and dropped,
          ``capturable`` restored, and ``decoupled_weight_decay`` must say what this class does;
        * each state: a name the rule keeps, a step count, every moment present after a step,
          a numeric array of the parameter's shape; with ``same_dtype`` also of the dtype the
          state is kept in (otherwise it is cast to it, as torch.optim casts to the parameter's).
        """
        cls = type(self).__name__

        def refuse(entry, reason, message=None):
            where = "state_dict" + "".join(f"[{e!r}]" for e in entry)
            err = ValueError(message or f"{where}: {reason}")
            err.entry, err.reason = entry, reason
            return err

        def real(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))

        nouns = {"lr": "learning rate", "initial_lr": "learning rate", "eps": "epsilon", "betas": "pair of betas",
                 "weight_decay": "weight decay", "lr_decay": "lr decay",
                 "initial_accumulator_value": "initial accumulator value"}
        torch_switches = ("foreach", "fused", "capturable", "differentiable")

        def hyper(gi, k, v, mine):
            """``v`` as the value to store for hyperparameter ``k``, or None to drop it; raises if bad."""
            noun = nouns.get(k, k)
            if k in torch_switches:
                if v is not None and not isinstance(v, (bool, np.bool_)):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not None or a bool")
                if k == "capturable" and k in mine:  # ours: the saved mode comes back (None: not capturable)
                    return bool(v)
                return None
            if k == "decoupled_weight_decay":
                decoupled = self.rule_name == "adamw"
                if not isinstance(v, (bool, np.bool_)) or bool(v) != decoupled:
                    raise refuse(("param_groups", gi, k), f"{v!r}: {cls} {'always' if decoupled else 'never'} "
                                 f"decouples weight decay (use {'Adam' if decoupled else 'AdamW'})")
                return None
            if k not in mine and k != "initial_lr":
                raise refuse(("param_groups", gi, k), f"{cls} has no hyperparameter {k!r} (it has "
                             f"{', '.join(n for n in mine if n != 'params')})")
            like = mine.get(k, 0.0)
            if isinstance(like, (bool, np.bool_)):
                if not isinstance(v, (bool, np.bool_)):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a bool")
                return bool(v)
            if isinstance(like, (tuple, list)):
                if not isinstance(v, (tuple, list)) or len(v) != len(like) or not all(map(real, v)):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {noun}: expected "
                                 f"{len(like)} numbers")
                v = tuple(x.item() if hasattr(x, "item") else x for x in v)
                if not all(np.isfinite(v)):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {noun}: not finite")
                return v
            if real(like):
                if not real(v):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {noun}: not a number")
                v = v.item() if hasattr(v, "item") else v
                if not np.isfinite(v):
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {noun}: not finite")
                if k == "initial_lr" and v < 0:
                    raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {noun} (must be >= 0)")
                return v
            if type(v) is not type(like):
                raise refuse(("param_groups", gi, k), f"{v!r} is not a {type(like).__name__}")
            return v

        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict expects a dict with 'state' and 'param_groups', "
                            f"got {type(state_dict).__name__}")
        groups = state_dict.get("param_groups")
        state = state_dict.get("state", {})
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            n = len(groups) if isinstance(groups, (list, tuple)) else 0
            raise refuse(("param_groups",), f"{n} param group(s), the optimizer has {len(self.param_groups)}",
                         f"state_dict has {n} param group(s), the optimizer has {len(self.param_groups)}")
        if not isinstance(state, dict):
            raise refuse(("state",), f"a {type(state).__name__}, not a dict of per-parameter state")
        rule = _rules.get(self.rule_name)
        plan, listed = [], {}
        # the dtype each parameter's state is kept in (float32 for half-precision parameters)
        state_dtypes = {id(p): getattr(f.flat, "state_dtype", f.flat.dtype) for fl in self._flats for f in fl
                        for p in f.flat.params if p.dtype == f.flat.dtype}
        low = {id(p) for fl in self._flats for f in fl if f.flat.low for p in f.flat.params}
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict):
                raise refuse(("param_groups", gi), f"a {type(saved).__name__}, not a dict")
            ids = saved.get("params")
            if not isinstance(ids, (list, tuple)):
                raise refuse(("param_groups", gi, "params"), f"{ids!r} is not a list of parameter indices")
            if len(ids) != len(mine["params"]):
                raise refuse(("param_groups", gi, "params"), f"{len(ids)} parameters, the optimizer has "
                             f"{len(mine['params'])}", f"param group {gi}: state_dict has {len(ids)} parameters, "
                             f"the optimizer has {len(mine['params'])}")
            for idx in ids:
                if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool):
                    raise refuse(("param_groups", gi, "params"), f"parameter index {idx!r} is not an integer")
                if int(idx) in listed:
                    raise refuse(("param_groups", gi, "params"), f"parameter index {idx!r} is listed twice")
                listed[int(idx)] = gi
            # each hyperparameter alone against the constructor's validation (so the error names it), then
            # together, for the rules that join several (Nesterov needs momentum and no dampening)
            hypers = {}
            for k, v in saved.items():
                if k == "params":
                    continue
                v = hyper(gi, k, v, mine)
                if v is None:
                    continue
                if k != "initial_lr":
                    try:
                        self._validate({**mine, k: v})
                    except (ValueError, TypeError, KeyError) as e:
                        raise refuse(("param_groups", gi, k), f"{v!r} is not a valid {nouns.get(k, k)} ({e})") \
                            from None
                hypers[k] = v
            merged = {**mine, **hypers}
            try:
                self._validate(merged)
            except (ValueError, TypeError, KeyError) as e:
                raise refuse(("param_groups", gi), f"its hyperparameters do not go together ({e})") from None
            need = rule.state_names(rule.flags(merged))
            per_param = []
            for idx, p in zip(ids, mine["params"]):
                st = state.get(idx, state.get(str(idx), {}))
                if not isinstance(st, dict):
                    raise refuse(("state", idx), f"a {type(st).__name__}, not a dict of state")
                moments = [n for n, v in st.items() if n != "step" and v is not None]
                if "step" not in st and moments:
                    # torch's SGD keeps no step count, only its momentum buffer: that buffer means the
                    # parameter was stepped, so the next step must use it (step 0 would overwrite it).
                    # Every other torch optimizer saves a step; without one its moments are unusable.
                    if self.rule_name != "sgd":
                        raise refuse(("state", idx, "step"), f"missing beside state {moments}; {cls} needs the "
                                     "step count its moments were made with")
                    st = dict(st, step=1)
                step = _as_count(st.get("step", 0))
                if step is None:
                    raise refuse(("state", idx, "step"), f"{st.get('step')!r} is not a step count",
                                 f"param group {gi}, parameter {idx}: step {st.get('step')!r} is not a count")
                missing = [n for n in need if st.get(n) is None]
                if step > 0 and missing:
                    raise refuse(("state", idx, missing[0]), f"missing after {step} step(s); resuming would "
                                 f"restart that moment from zero",
                                 f"param group {gi}, parameter {idx}: state {missing} missing after {step} "
                                 f"step(s); resuming would restart those moments from zero")
                entry, dtype = {"step": step}, state_dtypes.get(id(p), p.dtype)
                for name, v in st.items():
                    if name == "step" or v is None:  # None: a moment never made (torch's SGD without momentum)
                        continue
                    if name == MASTER and id(p) not in low:
                        continue  # a 16-bit run's master weights: a float32/float64 parameter has no use for them
                    if name not in rule.all_states and name != MASTER:
                        raise refuse(("state", idx, name), f"not a state {cls} keeps (it keeps "
                                     f"{', '.join(rule.all_states)}, and {MASTER} for float16/bfloat16 "
                                     f"parameters)")
                    try:
                        arr = _host_array(v)
                    except Exception as e:  # noqa: BLE001 - reported with the entry
                        raise refuse(("state", idx, name), f"a {type(v).__name__} is not an array ({e})") from None
                    if arr.dtype.kind not in "iuf":
                        raise refuse(("state", idx, name), f"dtype {arr.dtype} is not numeric")
                    if tuple(arr.shape) != p.shape:
                        raise refuse(("state", idx, name), f"shape {tuple(arr.shape)}, the parameter's is {p.shape}",
                                     f"param group {gi}, parameter {idx}: state '{name}' has shape "
                                     f"{tuple(arr.shape)}, the parameter has shape {p.shape}")
                    if same_dtype and arr.dtype != dtype:
                        raise refuse(("state", idx, name), f"dtype {arr.dtype}, the optimizer keeps this "
                                     f"parameter's state in {dtype}")
                    entry[name] = arr.astype(dtype, copy=False)
                per_param.append(entry)
            plan.append((hypers, per_param))
        for key in state:
            idx = key if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else \
                int(key) if isinstance(key, str) and key.isdigit() else None
            if idx is None or int(idx) not in listed:
                raise refuse(("state", key), "no param group lists this parameter")
        return plan

    def _restore_group(self, gi: int, per_param: list[dict], strict: bool) -> None:
        rule = _rules.get(self.rule_name)
        group = self.param_groups[gi]
        flags = rule.flags(group)
        by_id = {id(p): st for p, st in zip(group["params"], per_param)}
        init = dict(rule.state_init(flags, group))
        for f in self._flats[gi]:
            self._ensure_state(f, rule, flags, group)
            f.steps[:] = [_as_count(by_id[id(p)].get("step", 0)) for p in f.flat.params]
            f.dev = None  # device counts are uploaded again from these at the next device-scalar step
            for i, p in enumerate(f.flat.params):
                if strict and not f.steps[i]:  # never stepped in the saved run: fresh state, as torch.optim
                    for name, arr in f.states.items():
                        f.flat.slice_of(arr, i)[...] = init.get(name, 0.0) if name != MASTER else \
                            f.flat.slice_of(f.flat.data, i)
                for name, v in by_id[id(p)].items():
                    if name == "step" or (name == MASTER and not f.flat.low):
                        continue
                    if name not in f.states:
                        f.states[name] = f.flat.new_state(0.0)
                    dst = f.flat.slice_of(f.states[name], i)
                    src = _host_array(v)
                    if tuple(src.shape) != tuple(dst.shape):
                        if strict:
                            raise ValueError(f"state '{name}' shape {src.shape} != parameter shape {dst.shape}")
                        continue
                    dst[...] = f.flat.backend.asarray(src.astype(dst.dtype, copy=False))  # the state's dtype

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("params", "initial_lr"))
            lines.append(f"  group {i}: {len(g['params'])} tensors; {hp}")
        return "\n".join(lines + [")"])
