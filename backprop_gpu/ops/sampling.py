"""Random sampling as PyTorch spells it: ``bernoulli``, ``normal``, ``multinomial`` and the in-place
``normal_``, ``uniform_``, ``bernoulli_`` methods, all drawn on the tensor's device from its backend's
Philox stream (see :mod:`backprop_gpu.array.rng`).

As in torch, a sample drawn from tensors that require grad is on the graph with a zero gradient
(``torch.normal(mean, std)`` has ``NormalBackward``, whose gradients are zeros): it is not a
reparameterised sample; write ``mean + std * bg.randn_like(std)`` for that.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..array import get_backend
from ..tape.mode import is_grad_enabled
from ..tape.op import Op, apply
from ..tape.tensor import Tensor, get_default_dtype


class Sampled(Op):
    """A sample drawn given its inputs: the value ``sample``, a zero gradient for each input."""
    name = "sample"
    saves = ()
    forward = staticmethod(lambda F, *xs, sample: sample)
    vjp = staticmethod(lambda F, g, out, *xs, sample: tuple(g * 0 for _ in xs))


def _on_graph(sample, *inputs):
    tensors = [t for t in inputs if isinstance(t, Tensor)]
    if tensors and is_grad_enabled() and any(t.requires_grad for t in tensors) and sample.dtype.kind == "f":
        return apply(Sampled, *tensors, sample=sample)
    return Tensor._make(sample, tensors[0].backend if tensors else get_backend(None))


def bernoulli(input, p=None, *, generator=None) -> Tensor:  # noqa: A002 - torch's names
    """``torch.bernoulli``: 1 with probability ``input[i]`` (or the number ``p``), else 0, in
    ``input``'s dtype and shape."""
    _no_generator(generator, "bernoulli")
    b, x = input.backend, input.array
    if p is not None:
        mask = b.random_bernoulli(x.shape, float(p), x.dtype)
    else:
        if b.is_host and x.size and (float(x.min()) < 0 or float(x.max()) > 1):  # on a GPU: no sync to check
            raise RuntimeError(f"bernoulli: the probabilities (shape {input.shape}) must be in [0, 1]")
        mask = b.random_uniform(x.shape, x.dtype) < x
    return _on_graph(mask.astype(x.dtype), input)


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``torch.normal``: samples of N(mean, std**2), with ``mean`` and ``std`` tensors (broadcast
    together) or numbers (then ``size`` gives the shape)."""
    _no_generator(generator, "normal")
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        ref = mean if isinstance(mean, Tensor) else std
        b = ref.backend
        m = mean.array if isinstance(mean, Tensor) else mean
        s = std.array if isinstance(std, Tensor) else std
        shape = np.broadcast_shapes(np.shape(m), np.shape(s)) if size is None else tuple(size)
        z = b.random_normal(shape, ref.dtype)
        return _on_graph((z * s + m).astype(ref.dtype, copy=False), mean, std)
    if size is None:
        raise TypeError("normal(mean, std) with numbers needs size: normal(mean, std, size)")
    b = get_backend(device)
    dt = np.dtype(dtype or get_default_dtype())
    out = Tensor._make((b.random_normal(tuple(size), dt) * dt.type(std) + dt.type(mean)).astype(dt, copy=False), b)
    return out.requires_grad_(requires_grad)


def multinomial(input, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:  # noqa: A002
    """``torch.multinomial``: ``num_samples`` category indices per row of the (unnormalised,
    non-negative) weights ``input`` (1-D or 2-D), int64; without ``replacement`` each index at
    most once per row (the Gumbel-top-k trick: the largest ``log w + Gumbel`` keys)."""
    _no_generator(generator, "multinomial")
    if input.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {input.shape}")
    if not isinstance(num_samples, numbers.Integral) or num_samples <= 0:
        raise RuntimeError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
    b, xp = input.backend, input.backend.xp
    w = input.array.reshape(1, -1) if input.ndim == 1 else input.array
    rows, n = w.shape
    if not replacement and num_samples > n:
        raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without "
                           f"replacement ({num_samples} > {n})")
    w = w.astype(np.float64)
    if b.is_host and w.size and (float(w.min()) < 0 or not np.isfinite(w).all() or (w.sum(1) <= 0).any()):
        raise RuntimeError(f"multinomial: the weights (shape {input.shape}) must be finite, non-negative and have "
                           "a positive sum in every row")
    if replacement:  # inverse CDF: one uniform per draw against each row's cumulative weights
        cdf = xp.cumsum(w, axis=1)
        cdf /= cdf[:, -1:]
        u = b.random_uniform((rows, num_samples), np.float64)
        idx = xp.minimum((u[:, :, None] >= cdf[:, None, :]).sum(-1), n - 1)
    else:
        u = b.random_uniform((rows, n), np.float64)
        with np.errstate(divide="ignore"):
            keys = xp.log(w) - xp.log(-xp.log(u + 2.0 ** -54))  # log w + Gumbel(0, 1); zero weight: -inf
        idx = xp.argsort(-keys, axis=1, kind="stable")[:, :num_samples]
    idx = idx.astype(np.int64)
    return Tensor._make(idx.reshape(num_samples) if input.ndim == 1 else idx, b)


def _no_generator(generator, what):
    if generator is not None:
        raise NotImplementedError(f"{what}(generator=...): draws come from the backend's stream; seed it with "
                                  "bg.manual_seed")


# -- in-place fills (Tensor methods) -------------------------------------------------------------
def _fill_(t: Tensor, what: str, values) -> Tensor:
    t._check_inplace(what)  # a leaf that requires grad, under grad mode: refused, as in torch
    t.array[...] = values
    return t._bump()


def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    """Fill in place with samples of N(mean, std**2)."""
    _no_generator(generator, "normal_")
    return _fill_(self, "normal_", self.backend.random_normal(self.shape, self.dtype) * std + mean)


def uniform_(self, from_: float = 0.0, to: float = 1.0, *, generator=None, **kw) -> Tensor:
    """Fill in place with samples of U[from, to) (``from`` is also accepted as a keyword)."""
    _no_generator(generator, "uniform_")
    from_ = kw.pop("from", from_)
    if kw:
        raise TypeError(f"uniform_() got unexpected arguments {sorted(kw)}")
    return _fill_(self, "uniform_", from_ + (to - from_) * self.backend.random_uniform(self.shape, self.dtype))


def bernoulli_(self, p=0.5, *, generator=None) -> Tensor:
    """Fill in place with 1 (probability ``p``, a number or a tensor of probabilities) or 0."""
    _no_generator(generator, "bernoulli_")
    if isinstance(p, Tensor):
        mask = self.backend.random_uniform(self.shape, self.dtype) < p.array
    else:
        mask = self.backend.random_bernoulli(self.shape, float(p), self.dtype)
    return _fill_(self, "bernoulli_", mask)


METHODS = {"bernoulli": bernoulli, "multinomial": multinomial, "normal_": normal_, "uniform_": uniform_,
           "bernoulli_": bernoulli_}

__all__ = ["bernoulli", "normal", "multinomial", "Sampled", "METHODS"]
