"""A backend: one array module on one device, paired with one kernel provider.

The tape, the ops, ``nn`` and ``optim`` only ever talk to a :class:`Backend`:
its array module ``xp`` (NumPy or CuPy), host transfers, a seeded Philox generator,
the array namespace ``F`` (``xp`` plus the fused kernels of the hot ops) and
the fused optimizer kernels. Which array module and which kernel provider make
up each backend is declared once, in :mod:`backprop_gpu.array.registry`.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from .optim import get_check, get_kernel
from .rng import PhiloxGenerator, philox
from .rng.philox import MAX_SPAN

_BITS = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}


def _significand_bits(dtype: np.dtype, what: str) -> int:
    try:
        return _BITS[dtype.name]
    except KeyError:
        raise TypeError(f"{what}: dtype {dtype} is not a floating dtype ({', '.join(_BITS)})") from None


class Backend:
    """``arrays`` (an :mod:`~backprop_gpu.array.modules` instance bound to a device) plus
    ``kernels`` (a :mod:`~backprop_gpu.array.kernels` provider), under ``name``.

    ``launch_count`` counts fused-kernel launches, so tests can prove that an
    optimizer step over a whole model is a single launch.
    """

    def __init__(self, name: str, arrays, kernels):
        self.name = name
        self.arrays = arrays
        self.kernels = kernels
        self.xp = arrays.xp
        self.device = arrays.device
        #: whether arrays live in host memory (NumPy arrays)
        self.is_host = arrays.is_host
        #: whether the device is Numba's CUDA simulator (host arrays standing in for a GPU)
        self.simulated = arrays.simulated
        self.launch_count = 0
        self._generator = None
        # the array namespace VJPs run on: a plain attribute, read once per backward node
        self.F = kernels.namespace(self)
        if not self.is_host:
            _note_gpu_backend(self)

    # -- arrays ---------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Turn host data (or this backend's arrays) into this backend's array, on its device."""
        return self.arrays.asarray(data, dtype)

    def to_host(self, arr) -> np.ndarray:
        """A NumPy copy of ``arr`` (always a copy, never a view of device memory)."""
        return self.arrays.to_host(arr)

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""
        self.arrays.synchronize()

    def erf(self, arr):
        """Elementwise error function."""
        return self.arrays.erf(arr)

    def scatter_add(self, target, key, values) -> None:
        """``target[key] += values`` with repeated indices accumulating (unbuffered)."""
        self.arrays.scatter_add(target, key, values)

    # -- randomness -----------------------------------------------------------
    # Philox-4x32-10 (``rng``): each draw is one kernel launch on this backend's device, and a seed gives
    # the same numbers on every backend (uniforms, masks, integers, permutations bit for bit).
    @property
    def generator(self) -> PhiloxGenerator:
        """This backend's Philox generator (seed 0 until :meth:`manual_seed`)."""
        if self._generator is None:
            self._generator = PhiloxGenerator(self.kernels.optim_target)
        return self._generator

    def manual_seed(self, seed: int) -> None:
        """Restart this backend's stream from ``seed`` (an int in [-2**63, 2**64 - 1], as torch's)."""
        self.generator.manual_seed(seed)

    def _draw(self, kind, shape, dtype, *args):
        shape = tuple(int(s) for s in ((shape,) if isinstance(shape, int) else shape))
        out = self.arrays.empty(math.prod(shape), dtype)
        self.generator.draw(kind, out, *args)
        return out.reshape(shape)

    def random_uniform(self, shape, dtype):
        """Uniform samples in [0, 1) of a float ``dtype``: multiples of 2**-p for its ``p``-bit significand."""
        dtype = np.dtype(dtype)
        bits = _significand_bits(dtype, "random_uniform")
        if bits == 53:
            return self._draw("uniform64", shape, dtype)
        out = self._draw("uniform32", shape, np.float32, np.uint64(32 - bits), np.float32(2.0 ** -bits))
        return out if dtype == np.float32 else out.astype(dtype)  # exact: k * 2**-bits fits dtype

    def random_normal(self, shape, dtype):
        """Standard-normal samples of a float ``dtype`` (Box-Muller in float64, rounded once to ``dtype``)."""
        dtype = np.dtype(dtype)
        _significand_bits(dtype, "random_normal")
        if dtype in (np.float32, np.float64):
            return self._draw("normal", shape, dtype)
        return self._draw("normal", shape, np.float64).astype(dtype)

    def random_bernoulli(self, shape, p: float, dtype):
        """A boolean mask, True with probability ``p``: ``uniform < p``, both in the float ``dtype``
        (``random_uniform(shape, dtype) < p`` for the same stream, without the uniform array)."""
        kind, args = self.bernoulli_draw(p, dtype)
        return self._draw(kind, shape, np.uint8, *args).view(bool)

    def bernoulli_draw(self, p: float, dtype, what="random_bernoulli") -> tuple:
        """``(kind, args)`` of the Philox draw behind :meth:`random_bernoulli` for ``dtype``: a fused
        kernel drawing the same mask takes these (and :meth:`PhiloxGenerator.take` its blocks)."""
        dtype = np.dtype(dtype)
        bits = _significand_bits(dtype, what)
        if not 0 <= p <= 1:
            raise ValueError(f"{what}: p must be in [0, 1], got {p}")
        if bits == 53:
            return "bernoulli64", (np.float64(p),)
        p = np.float32(np.asarray(p, dtype).astype(np.float32))  # p rounded to dtype, exact in float32
        return "bernoulli32", (np.uint64(32 - bits), np.float32(2.0 ** -bits), p)

    def random_integers(self, low: int, high: int, shape, dtype=np.int64):
        """Uniform integers in [low, high) (``high - low`` at most 2**63), as ``dtype``."""
        low, high = int(low), int(high)
        span = high - low
        if not 1 <= span <= MAX_SPAN:
            raise ValueError(f"random_integers: high - low must be in [1, 2**63], got high {high}, low {low}")
        if not -(1 << 63) <= low < (1 << 63):
            raise ValueError(f"random_integers: low {low} does not fit int64")
        kind = "randint32" if span <= 1 << 32 else "randint64"
        out = self._draw(kind, shape, np.int64, np.int64(low), np.uint64(span))
        return out if np.dtype(dtype) == np.int64 else out.astype(dtype)

    def permutation(self, n: int, dtype=np.int64):
        """A random permutation of ``range(n)`` as this backend's array: the argsort of distinct random keys."""
        n = int(n)
        if n < 0:
            raise ValueError(f"permutation: n must be non-negative, got {n}")
        keys = self._draw("perm_keys", n, np.uint64, np.uint64(philox.perm_shift(n)))
        return self.xp.argsort(keys).astype(dtype, copy=False)

    def rng_state(self) -> dict:
        """The generator state as JSON-able data (for checkpoints): ``{"generator", "seed", "offset"}``."""
        return self.generator.state

    def set_rng_state(self, state: dict) -> None:
        """Continue from a :meth:`rng_state`; ValueError (and nothing changed) for anything else, a NumPy
        bit-generator state from before the Philox generator included."""
        self.generator.set_state(state)

    # -- fused optimizer kernels ------------------------------------------------
    def fused_update(self, rule_name: str, flags: tuple, p, g, states: tuple, hypers: tuple, mask=None,
                     scalars=None) -> None:
        """Apply optimizer rule ``rule_name`` in place, in one kernel launch; with ``mask`` (uint8, as
        long as ``p``, on this device) only to the elements where it is nonzero. With ``scalars`` (the
        device arrays lr, step, inv_scale, found_inf), the device-scalar form: ``hypers`` are then the
        rule's constants (see ``array.optim``)."""
        k = get_kernel(self.kernels.optim_target, rule_name, flags, p.dtype, mask is not None, scalars is not None)
        extra = () if scalars is None else (scalars,)
        k(p, g, states, hypers, *extra, *(() if mask is None else (mask,)))
        self.launch_count += 1

    def found_inf_check(self, g, found_inf) -> None:
        """Set the 1-element float32 ``found_inf`` to 1 if ``g`` holds an inf or NaN, in one launch."""
        get_check(self.kernels.optim_target, g.dtype)(g, found_inf)
        self.launch_count += 1

    def __reduce__(self):
        # pickled and deep-copied by name: the one backend of that device in the receiving process
        spec = self.name if self.device.type == "cpu" else f"{self.name}:{self.device.index or 0}"
        return _backend_named, (spec,)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        sim = " (simulated)" if self.simulated else ""
        return f"<Backend {self.name} on {self.device}{sim}>"


class _DeviceSwitchingBackend(Backend):
    """A GPU backend in a process that uses more than one GPU. Every op reads its backend's ``F`` or
    ``xp`` before it computes (forward in ``apply``, each VJP in backward), and here that read makes
    the backend's GPU the current device, so CuPy launches and allocates there; so do the fused
    optimizer and random-number launches. With one GPU no backend has this class, and nothing is
    checked per op. The current device is left on the last GPU used (ops do not restore it)."""

    def _use_device(self):
        d = self.__dict__
        if d["xp"].cuda.runtime.getDevice() != d["device"].index:
            d["arrays"].cuda_device.use()

    @property
    def F(self):
        self._use_device()
        return self.__dict__["F"]

    @property
    def xp(self):
        self._use_device()
        return self.__dict__["xp"]

    def fused_update(self, *args, **kwargs) -> None:
        self._use_device()
        super().fused_update(*args, **kwargs)

    def found_inf_check(self, *args) -> None:
        self._use_device()
        super().found_inf_check(*args)

    def _draw(self, *args):
        self._use_device()
        return super()._draw(*args)


_gpu_backends = weakref.WeakSet()


def _note_gpu_backend(b: Backend) -> None:
    """Once backends on two different GPUs exist, make every GPU backend switch devices (see
    :class:`_DeviceSwitchingBackend`)."""
    _gpu_backends.add(b)
    if len({x.device.index for x in _gpu_backends}) > 1:
        for x in _gpu_backends:
            x.__class__ = _DeviceSwitchingBackend


__all__ = ["Backend"]


def _backend_named(spec: str) -> "Backend":
    from .registry import get_backend  # the registry builds backends: imported when one is unpickled

    return get_backend(spec)

