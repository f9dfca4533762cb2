"""Kernel providers: who computes the fused kernels of the hot ops and the optimizer steps.

A provider gives a backend its array namespace ``F`` (``xp`` plus the fused
kernels; :mod:`.reference` states each kernel once over ``xp``, a compiled
provider overrides some of them with the same contract) and names the target
its fused optimizer kernels are built for (:mod:`backprop_gpu.array.optim`).
Compiled providers import their compiler only when a backend is made.
"""
from __future__ import annotations


class KernelProvider:
    """A namespace class (loaded on first use) and an optimizer-kernel target."""

    def __init__(self, name: str, optim_target: str, namespace_path: str | None = None, needs: str | None = None):
        self.name = name
        self.optim_target = optim_target
        self._namespace_path = namespace_path  # "module:Class", relative to this package
        self._needs = needs  # a module the provider imports, checked by availability()

    def availability(self) -> str | None:
        """``None`` if this provider can run here, else what is missing."""
        if self._needs is None:
            return None
        import importlib.util

        try:
            found = importlib.util.find_spec(self._needs) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"the {self._needs} package is not installed"

    def namespace(self, backend):
        """The array namespace ``F`` for ``backend``."""
        if self._namespace_path is None:
            from ..namespace import ArrayNamespace as cls
        else:
            import importlib

            mod, _, name = self._namespace_path.partition(":")
            cls = getattr(importlib.import_module(mod, __name__), name)
        return cls(backend)

    def __repr__(self):
        return f"<KernelProvider {self.name}>"


#: the statement of every kernel, over xp; NumPy-vectorised optimizer steps
REFERENCE = KernelProvider("reference", "numpy")
#: Numba-compiled CPU loops for the hot ops and the optimizer steps
NUMBA = KernelProvider("numba", "numba", ".numba_cpu:NumbaNamespace", needs="numba")
#: CuPy: the hot ops' kernels as CUDA C (.cuda), optimizer steps as CUDA C generated from the rules
CUDA = KernelProvider("cuda", "cupy", ".cuda:CudaNamespace")
#: Numba CUDA: the reference kernels over the arrays, optimizer steps as Numba CUDA kernels
NUMBA_CUDA = KernelProvider("numba-cuda", "numba-cuda", needs="numba.cuda")

__all__ = ["KernelProvider", "REFERENCE", "NUMBA", "CUDA", "NUMBA_CUDA"]
