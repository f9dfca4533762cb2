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
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from ..tape.mode import enable_grad, no_grad
from ..tape.tensor import Tensor
from ..array.optim import rules as _rules
from .flat import FlatGroup

log = logging.getLogger("backprop_gpu")


def _as_count(step):
    """A saved step count as an int (torch saves it as a 0-d tensor), or None if it is not one."""
    if hasattr(step, "item") and getattr(step, "size", 1) == 1:
        step = step.item()
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        return None
    return int(step)


class _Flat:
    """One flat buffer of a param group, with its optimizer state and step count."""

    __slots__ = ("flat", "states", "steps", "flags", "masks")

    def __init__(self, flat: FlatGroup):
        self.flat = flat
        self.states: dict[str, object] = {}
        self.steps = np.zeros(len(flat.params), dtype=np.int64)  # per parameter, as torch.optim counts
        self.flags = None
        self.masks: dict[bytes, object] = {}  # element masks on the device, by parameter selection

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
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer params must be Tensors, got {type(p).__name__}")
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
        for p in params:
            buckets.setdefault((str(p.device), p.backend.name, str(p.dtype)), []).append(p)
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
        with no_grad():
            for gi, group in enumerate(self.param_groups):
                self._sync(gi)
                flags = rule.flags(group)
                for f in self._flats[gi]:
                    self._ensure_state(f, rule, flags, group)
                    self._step_flat(f, rule, flags, group)
        return loss

    def _step_flat(self, f: _Flat, rule, flags, group) -> None:
        has = np.array(f.flat.has_grad())
        if not has.any():
            return
        dtype = f.flat.dtype.type
        states = tuple(f.states[n] for n in rule.state_names(flags))
        for step in np.unique(f.steps[has]):
            which = has & (f.steps == step)
            hypers = tuple(dtype(h) for h in rule.hypers(group, int(step) + 1, flags))
            mask = None if which.all() else f.mask(which)
            f.flat.backend.fused_update(self.rule_name, flags, f.flat.data, f.flat.grad, states, hypers, mask)
        f.steps[has] += 1
        f.flat.bump_versions(None if has.all() else has)

    @staticmethod
    def _ensure_state(f: _Flat, rule, flags, group) -> None:
        if f.flags == flags:
            return
        for name, fill in rule.state_init(flags, group):
            if name not in f.states:
                f.states[name] = f.flat.new_state(fill)
        f.flags = flags

    # -- state_dict ---------------------------------------------------------------
    def _state_of_group(self, gi: int) -> list[dict]:
        """Per-parameter state (host copies) of group ``gi``, in parameter order."""
        out = {}
        for f in self._flats[gi]:
            for i, p in enumerate(f.flat.params):
                st = {"step": int(f.steps[i])}
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
                    state[idx] = st
                ids.append(idx)
                idx += 1
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = ids
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`.

        Checks every group size and state shape first and changes nothing if any
        does not match, so a bad checkpoint never leaves a half-loaded optimizer.
        """
        groups, plan = state_dict.get("param_groups"), self.check_state_dict(state_dict)
        for gi, (saved, per_param) in enumerate(zip(groups, plan)):
            group = self.param_groups[gi]
            for k, v in saved.items():
                if k != "params":
                    group[k] = v
            self._sync(gi)
            self._restore_group(gi, per_param, strict=True)

    def check_state_dict(self, state_dict: dict) -> list:
        """Raise ValueError if ``state_dict`` does not fit these parameters; returns the per-parameter state."""
        groups = state_dict.get("param_groups")
        state = state_dict.get("state", {})
        if groups is None or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {0 if groups is None else len(groups)} param group(s), "
                             f"the optimizer has {len(self.param_groups)}")
        plan = []
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(f"param group {gi}: state_dict has {len(saved['params'])} parameters, "
                                 f"the optimizer has {len(mine['params'])}")
            per_param = []
            rule = _rules.get(self.rule_name)
            need = rule.state_names(rule.flags({**mine, **{k: v for k, v in saved.items() if k != "params"}}))
            for idx, p in zip(saved["params"], mine["params"]):
                st = state.get(idx, state.get(str(idx), {}))
                step = _as_count(st.get("step", 0))
                if step is None:
                    raise ValueError(f"param group {gi}, parameter {idx}: step {st.get('step')!r} is not a count")
                missing = [n for n in need if n not in st]
                if step > 0 and missing:
                    raise ValueError(f"param group {gi}, parameter {idx}: state {missing} missing after {step} "
                                     f"step(s); resuming would restart those moments from zero")
                for name, v in st.items():
                    if name == "step":
                        continue
                    shape = tuple(v.shape)
                    if shape != p.shape:
                        raise ValueError(f"param group {gi}, parameter {idx}: state '{name}' has shape {shape}, "
                                         f"the parameter has shape {p.shape}")
                per_param.append(st)
            plan.append(per_param)
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
            for i, p in enumerate(f.flat.params):
                if strict and not f.steps[i]:  # never stepped in the saved run: fresh state, as torch.optim
                    for name, arr in f.states.items():
                        f.flat.slice_of(arr, i)[...] = init.get(name, 0.0)
                for name, v in by_id[id(p)].items():
                    if name == "step":
                        continue
                    if name not in f.states:
                        f.states[name] = f.flat.new_state(0.0)
                    dst = f.flat.slice_of(f.states[name], i)
                    src = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
                    if tuple(src.shape) != tuple(dst.shape):
                        if strict:
                            raise ValueError(f"state '{name}' shape {src.shape} != parameter shape {dst.shape}")
                        continue
                    dst[...] = f.flat.backend.asarray(src.astype(f.flat.dtype, copy=False))

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("params", "initial_lr"))
            lines.append(f"  group {i}: {len(g['params'])} tensors; {hp}")
        return "\n".join(lines + [")"])
