"""Counter-based random numbers: Philox-4x32-10, drawn on each backend's device, the same everywhere.

A :class:`PhiloxGenerator` is a seed and a block offset; every draw is one
kernel launch that fills an array on the device and advances the offset by the
blocks it used (:mod:`.philox` states the stream and each distribution once, in
NumPy; that is also the ``numpy`` target). The kernels of each target follow it:

========== ============================================ ==================================
target     kernels                                      checked (tests/array/test_philox.py)
========== ============================================ ==================================
numpy      :mod:`.philox` (vectorised NumPy)            Random123's known-answer vectors
numba      :mod:`.numba_cpu` (Numba CPU loops)          bit for bit against numpy
numba-cuda :mod:`.numba_cuda` (Numba CUDA)              the simulator; PTX compile
cupy       :mod:`.cuda_source` via :mod:`.cupy_impl`    NVRTC compile; host C build; the
                                                        recording CuPy stand-in
========== ============================================ ==================================

The target is the backend's kernel provider's (``KernelProvider.optim_target``,
declared once in :mod:`backprop_gpu.array.kernels`). Uniforms, Bernoulli masks,
integers and permutations are bit-identical on every target for the same seed;
normals go through each device's own ``log``/``cos``/``sin`` and agree to about
an ulp.
"""
from __future__ import annotations

import importlib

from . import philox
from .philox import MASK64
from .scalar import PER_BLOCK

#: the kernels of each target, loaded on first use
TARGETS = {"numpy": ".numpy_impl", "numba": ".numba_cpu", "numba-cuda": ".numba_cuda", "cupy": ".cupy_impl"}
#: the ``generator`` entry of a state
NAME = "philox4x32-10"

_SEED_RANGE = (-(1 << 63), MASK64)


def implementation(target: str):
    """The kernel module of ``target``: its ``run(kind, out, k0, k1, offset, *args)`` fills ``out``."""
    try:
        path = TARGETS[target]
    except KeyError:
        raise ValueError(f"no Philox kernels for target {target!r}; expected one of {', '.join(TARGETS)}") from None
    return importlib.import_module(path, __name__)


def normalize_seed(seed) -> int:
    """``seed`` as the 64-bit key, as ``torch.manual_seed`` takes it: an int in [-2**63, 2**64 - 1],
    a negative one mapped to ``0xffff_ffff_ffff_ffff + seed``."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise ValueError(f"seed must be within [-0x8000_0000_0000_0000, 0xffff_ffff_ffff_ffff], got {seed}")
    return seed if seed >= 0 else MASK64 + seed


def _is_u64(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MASK64


def check_state(state) -> None:
    """Raise ValueError, saying what is wrong, unless ``state`` is a state :meth:`PhiloxGenerator.set_state`
    takes: ``{"generator": "philox4x32-10", "seed": int, "offset": int}``, both 64-bit unsigned.

    A NumPy bit-generator state (what backends saved before they drew from Philox) is refused:
    its stream cannot be continued by this generator."""
    if not isinstance(state, dict):
        raise ValueError(f"a {type(state).__name__}, not a Philox generator state (a dict of generator, seed, offset)")
    if "bit_generator" in state:
        raise ValueError(f"a NumPy {state.get('bit_generator')} generator state, saved before the backends drew from "
                         f"{NAME}: its stream cannot be continued; seed anew (manual_seed) or start a new run")
    if set(state) != {"generator", "seed", "offset"}:
        raise ValueError(f"entries {sorted(map(str, state))}, not a Philox generator state (generator, seed, offset)")
    if state["generator"] != NAME:
        raise ValueError(f"generator {state['generator']!r}, expected {NAME!r}")
    for k in ("seed", "offset"):
        if not _is_u64(state[k]):
            raise ValueError(f"{k} {state[k]!r} is not an integer in [0, 2**64)")


class PhiloxGenerator:
    """A Philox-4x32-10 stream: ``seed`` (the key) and ``offset`` (blocks drawn so far), drawing with
    the kernels of ``target``. Its :attr:`state` is plain JSON-able data."""

    check_state = staticmethod(check_state)

    def __init__(self, target: str, seed: int = 0):
        self.target = target
        self._impl = None
        self.manual_seed(seed)

    def manual_seed(self, seed) -> None:
        """Restart the stream from ``seed`` (see :func:`normalize_seed`), at offset 0."""
        self.seed = normalize_seed(seed)
        self.offset = 0

    @property
    def state(self) -> dict:
        return {"generator": NAME, "seed": self.seed, "offset": self.offset}

    def set_state(self, state: dict) -> None:
        """Continue from ``state`` (checked first, see :func:`check_state`; nothing changes if it is refused)."""
        check_state(state)
        self.seed, self.offset = state["seed"], state["offset"]

    def draw(self, kind: str, out, *args) -> None:
        """Fill the 1-D contiguous ``out`` with draw ``kind`` (a :data:`.scalar.PER_BLOCK` name; ``args``
        typed as :data:`.scalar.EXTRA` says) and advance past the blocks it used."""
        if self._impl is None:
            self._impl = implementation(self.target)
        n = out.shape[0]
        k0, k1, offset = self.take(kind, n)
        if n:
            try:
                self._impl.run(kind, out, k0, k1, offset, *args)
            except BaseException:
                self.offset = int(offset)  # a draw that failed used nothing
                raise

    def take(self, kind: str, n: int) -> tuple:
        """``(k0, k1, offset)`` (uint64) for a draw ``kind`` of ``n`` elements, the generator advanced
        past its blocks: what a kernel that draws inside (fused dropout) is handed."""
        import numpy as np

        k0, k1 = philox.key_of(self.seed)
        offset = self.offset
        self.offset = (offset + -(-n // PER_BLOCK[kind])) & MASK64
        return np.uint64(k0), np.uint64(k1), np.uint64(offset)

    def __repr__(self):
        return f"<PhiloxGenerator {self.target} seed={self.seed} offset={self.offset}>"


__all__ = ["PhiloxGenerator", "check_state", "implementation", "normalize_seed", "philox", "NAME", "TARGETS"]
