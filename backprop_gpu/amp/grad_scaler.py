"""``GradScaler``: dynamic loss scaling, as ``torch.amp.GradScaler``.

The scale, the growth tracker and each device's found-inf flag are 0-d arrays on the
device, updated there, so :meth:`GradScaler.scale`, :meth:`~GradScaler.step`,
:meth:`~GradScaler.unscale_` and :meth:`~GradScaler.update` read nothing back to the host.

A step, as torch's GradScaler steps its fused optimizers:

* ``inv_scale = 1 / scale`` on the device (one launch), the found-inf flag zeroed (one);
* one check launch per flat gradient buffer (``Backend.found_inf_check``) sets the flag if a
  gradient is inf or NaN; all of them run before any update launch;
* the optimizer's step, with the device-scalar form of its fused kernels: each buffer's one
  launch multiplies its gradients by ``inv_scale`` as it loads them and does nothing if the
  flag is set; the step counts gain ``1 - found_inf`` on the device, so a skipped step leaves
  Adam's bias corrections where torch leaves them. The gradients stay scaled, as in torch's
  fused path. An optimizer a scaler has stepped keeps its step counts and lr on the device
  from then on (see :mod:`backprop_gpu.optim.optimizer`).

:meth:`~GradScaler.unscale_` keeps torch's explicit semantics: the gradients are divided by
the scale in place (a check launch and a multiplication per buffer), and the step that
follows does not unscale again (``inv_scale`` 1) but still skips on the flag.
"""
from __future__ import annotations

import warnings
from enum import Enum

import numpy as np

from ..array import available_backends, get_backend
from ..array.dtypes import is_floating
from ..tape.tensor import Tensor

_f32 = np.dtype("float32")


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state():
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """Dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``.

    ``scaler.scale(loss).backward()`` makes the gradients ``scale`` times too large, so
    that small float16 gradients do not flush to zero; ``scaler.step(optimizer)`` unscales
    them (unless :meth:`unscale_` already did) and runs ``optimizer.step()`` only if all
    are finite; ``scaler.update()`` then multiplies the scale by ``backoff_factor`` after
    an overflow, or by ``growth_factor`` after ``growth_interval`` clean steps in a row.

    ``device`` is the device type of the scaled tensors (``'cuda'`` or ``'cpu'``); with
    ``'cuda'`` and no CUDA backend the scaler warns and disables itself, as torch's does.
    A disabled scaler passes everything through (``scale`` returns its input, ``step``
    just calls ``optimizer.step()``).
    """

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        self._device = str(device)
        self._enabled = bool(enabled)
        if self._enabled and self._device.split(":")[0] == "cuda":
            if not any(get_backend(n).device.type == "cuda" for n in available_backends()):
                warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                              UserWarning, stacklevel=2)
                self._enabled = False
        if self._enabled:
            if not growth_factor > 1.0:
                raise ValueError(f"The growth factor must be > 1.0, got {growth_factor}")
            if not backoff_factor < 1.0:
                raise ValueError(f"The backoff factor must be < 1.0, got {backoff_factor}")
            self._init_scale = float(init_scale)
            self._scale = None  # 0-d float32 on the device of the first scaled output
            self._growth_factor = float(growth_factor)
            self._backoff_factor = float(backoff_factor)
            self._growth_interval = int(growth_interval)
            self._init_growth_tracker = 0
            self._growth_tracker = None  # 0-d int32 beside the scale
            self._backend = None
            self._scale_on = {}  # the scale as a 0-d tensor, per other device (torch's replicator)
            self._per_optimizer_states = {}
            self._inv_scale = None  # 0-d float32 beside the scale: 1 / scale, recomputed each step
            self._found_bufs = {}  # (id(optimizer), device): its 0-d float32 found-inf flag, reused
            self._ones = {}  # device: a 1-element float32 1, the inv_scale of a step after unscale_

    # -- scaling ----------------------------------------------------------------------
    def _lazy_init(self, backend) -> None:
        self._backend = backend
        self._scale = backend.xp.full((), self._init_scale, dtype=_f32)
        self._growth_tracker = backend.xp.full((), self._init_growth_tracker, dtype=np.int32)
        self._scale_on = {}

    def _check(self, funcname: str) -> None:
        if self._scale is None:
            raise RuntimeError(f"Attempted {funcname} but _scale is None.  This may indicate your script did "
                               "not use scaler.scale(loss or outputs) earlier in the iteration.")

    def _scale_tensor(self, backend) -> Tensor:
        if backend.device == self._backend.device:
            t = self._scale_on.get(backend.device)
            if t is None:
                t = self._scale_on[backend.device] = Tensor._make(self._scale, self._backend)
            return t
        return Tensor._make(backend.asarray(self._scale), backend)  # a device-to-device copy, no host read

    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples/iterables of them) times the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._lazy_init(outputs.backend)
            return outputs * self._scale_tensor(outputs.backend)

        def apply_scale(val):
            if isinstance(val, Tensor):
                if self._scale is None:
                    self._lazy_init(val.backend)
                return val * self._scale_tensor(val.backend)
            if isinstance(val, (list, tuple)) or hasattr(val, "__iter__"):
                iterable = map(apply_scale, val)
                return type(val)(iterable) if isinstance(val, (list, tuple)) else iterable
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")
        return apply_scale(outputs)

    # -- unscaling and the step ---------------------------------------------------------
    def _flats(self, optimizer) -> list:
        if not hasattr(optimizer, "flat_groups"):
            raise TypeError(f"GradScaler works with backprop_gpu.optim optimizers (their flat gradient buffers), "
                            f"got {type(optimizer).__name__}")
        return [f for f in optimizer.flat_groups if any(f.has_grad())]  # syncs every gradient into its buffer

    def _check_inf(self, optimizer, flats) -> dict:
        """``{device: found_inf}``: each device's flag zeroed, then set by one check launch per buffer."""
        found = {}
        if len(self._found_bufs) > 64:  # optimizers come and go: keep this from growing without bound
            self._found_bufs = {}
        for flat in flats:
            b = flat.backend
            fi = found.get(b.device)
            if fi is None:
                key = (id(optimizer), b.device)
                fi = self._found_bufs.get(key)
                if fi is None:
                    fi = self._found_bufs[key] = b.xp.zeros((), dtype=_f32)
                else:
                    fi.fill(0)
                found[b.device] = fi
            b.found_inf_check(flat.grad, fi.reshape(1))
        return found

    def _inv_on(self, backend):
        """1 / scale as a 0-d float32 on ``backend``'s device (torch: the reciprocal in double, then
        float; the float32 division rounds the same, being correctly rounded either way)."""
        if self._inv_scale is None:
            self._inv_scale = self._backend.xp.zeros((), dtype=_f32)
        self._backend.xp.divide(1.0, self._scale, out=self._inv_scale)
        return self._inv_scale if backend.device == self._backend.device else backend.asarray(self._inv_scale)

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale in place, once per step (before
        clipping them, say), and record on the device whether any was inf or NaN."""
        if not self._enabled:
            return
        self._check("unscale_")
        state = self._per_optimizer_states.setdefault(id(optimizer), _fresh_state())
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        flats = self._flats(optimizer)
        if any(f.grad.dtype == np.float16 for f in flats):
            raise ValueError("Attempting to unscale FP16 gradients.")
        state["found_inf_per_device"] = self._check_inf(optimizer, flats)
        invs = {}
        for flat in flats:
            b, g = flat.backend, flat.grad
            inv = invs.get(b.device)
            if inv is None:
                inv = invs[b.device] = self._inv_on(b)
            if g.dtype.itemsize == 2:  # bfloat16: scaled in float32, stored rounded
                g[...] = (g.astype(_f32) * inv).astype(g.dtype)
            else:
                b.xp.multiply(g, inv, out=g)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Run ``optimizer.step(*args, **kwargs)`` with the gradients unscaled inside its fused launches
        (unless :meth:`unscale_` already unscaled them) and skipped there, on the device, if any is inf or
        NaN (see the module docstring); returns what ``optimizer.step`` returned."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check("step")
        state = self._per_optimizer_states.setdefault(id(optimizer), _fresh_state())
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            flats = self._flats(optimizer)
            state["found_inf_per_device"] = self._check_inf(optimizer, flats)
            invs = {f.backend.device: f.backend for f in flats}
            invs = {dev: self._inv_on(b).reshape(1) for dev, b in invs.items()}
        else:  # unscale_ did it: the kernels multiply by 1
            invs = {}
            for dev in state["found_inf_per_device"]:
                one = self._ones.get(dev)
                if one is None:
                    b = next(f.backend for f in optimizer.flat_groups if f.backend.device == dev)
                    one = self._ones[dev] = b.xp.ones(1, dtype=_f32)
                invs[dev] = one
        found = state["found_inf_per_device"]
        if not found:
            raise RuntimeError("No inf checks were recorded for this optimizer (it has no gradients).")
        if len(found) > 1:  # every device skips if any overflowed: the sum, copied device to device
            backends = {f.backend.device: f.backend for f in optimizer.flat_groups}
            here = self._backend
            total = sum(v if dev == here.device else here.asarray(v) for dev, v in found.items())
            found = {dev: (total if dev == here.device else backends[dev].asarray(total)) for dev in found}
        optimizer._grad_scaling = {dev: (invs[dev], fi.reshape(1)) for dev, fi in found.items()}
        try:
            retval = optimizer.step(*args, **kwargs)
        finally:
            optimizer._grad_scaling = None
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Set the scale for the next iteration: ``new_scale`` (a float or a 1-element tensor) if
        given, else backed off after an overflow in any optimizer stepped since the last update,
        or grown after ``growth_interval`` clean steps (torch's ``_amp_update_scale_``, on the device)."""
        if not self._enabled:
            return
        self._check("update")
        xp = self._backend.xp
        if new_scale is not None:
            if isinstance(new_scale, (int, float)) and not isinstance(new_scale, bool):
                self._scale[...] = new_scale
            elif isinstance(new_scale, Tensor) and new_scale.numel() == 1 and is_floating(new_scale.dtype) \
                    and not new_scale.requires_grad:
                arr = new_scale.array.reshape(())
                self._scale[...] = arr if new_scale.backend.device == self._backend.device \
                    else self._backend.asarray(new_scale.numpy().reshape(()))
            else:
                raise ValueError("new_scale should be a float or a 1-element Tensor of a floating dtype with "
                                 f"requires_grad=False, got {new_scale!r}")
        else:
            here = self._backend.device
            found = [v if dev == here else self._backend.asarray(v)
                     for st in self._per_optimizer_states.values() for dev, v in st["found_inf_per_device"].items()]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update.")
            total = found[0]
            for v in found[1:]:
                total = total + v
            bad = total > 0
            successful = self._growth_tracker + 1
            grow = ~bad & (successful == self._growth_interval)
            grown = (self._scale * _f32.type(self._growth_factor)).astype(_f32)
            grown = xp.where(xp.isfinite(grown), grown, self._scale)  # torch keeps the scale if growth overflows
            backed = (self._scale * _f32.type(self._backoff_factor)).astype(_f32)
            self._scale[...] = xp.where(bad, backed, xp.where(grow, grown, self._scale))
            self._growth_tracker[...] = xp.where(bad | grow, 0, successful)
        self._per_optimizer_states = {}

    # -- inspection and state -------------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale as a Python float (a host read), 1.0 when disabled."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        """The factor the scale grows by after ``growth_interval`` steps without Inf/NaN."""
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        """Set the growth factor."""
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        """The factor the scale is multiplied by after a step with Inf/NaN gradients."""
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        """Set the backoff factor."""
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        """How many consecutive steps without Inf/NaN grow the scale."""
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        """Set the growth interval."""
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else int(self._growth_tracker)

    def is_enabled(self) -> bool:
        """Whether the scaler scales (``enabled=True`` when built)."""
        return self._enabled

    def state_dict(self) -> dict:
        """``{"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}`` as
        torch's (Python numbers); empty when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned (torch's state dicts too)."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state_dict)
        if missing:
            raise KeyError(f"GradScaler state dict lacks {sorted(missing)}")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale[...] = self._init_scale
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker[...] = self._init_growth_tracker


__all__ = ["GradScaler"]
