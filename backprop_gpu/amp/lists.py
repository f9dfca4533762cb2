"""Which ops autocast casts, and to what: PyTorch's autocast op lists, by device type.

Source: PyTorch's "Autocast Op Reference" (docs/source/amp.rst, sections "CUDA Ops that can
autocast to float16/float32" and "CPU Ops that can autocast to bfloat16/float32"), which
lists the ops registered in aten/src/ATen/autocast_mode.h. The CPU entries were checked
against torch 2.13.0+cpu (tests/test_amp.py compares the output dtypes with
``torch.autocast('cpu', dtype=torch.bfloat16)`` op by op).

Keys are our op names: an :class:`~backprop_gpu.tape.op.Op`'s ``name`` (the hook in
:func:`~backprop_gpu.tape.op.apply` looks them up) or the name a composite function passes
to the hook itself (the losses of :mod:`backprop_gpu.nn.functional` built from several ops,
``layer_norm``, and ``conv2d``/``conv1d``, cast at entry so that im2col's large column
array is made in the low dtype rather than cast). Of torch's lists only the ops we have
appear here; ``mm``, ``bmm`` and ``__matmul__`` are our ``matmul`` op, ``conv1d`` is ``conv2d``
on height-1 images.

* ``LOWER``: floating inputs (float32; float64 is never cast, as in torch) are cast to the
  autocast dtype.
* ``FP32``: float16/bfloat16 inputs are cast up to float32.
* Every other op runs in the widest type of its inputs (NumPy's and torch's promotion):
  ``bfloat16 + float32`` is float32. Torch's "promote" list (cat, stack, where, ...) is
  that rule, which our ops follow anyway.
"""
from __future__ import annotations

#: matrix products and convolutions: identical on both device types
_PRODUCTS = frozenset({"matmul", "linear", "linear_relu", "conv2d", "conv1d", "einsum"})

#: the losses torch runs in float32 on both device types
_LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
                     "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div"})

LOWER = {
    "cpu": _PRODUCTS,
    "cuda": _PRODUCTS,
}

FP32 = {
    # CPU: losses and prod only; softmax, norms, sum/mean, exp/log stay in bfloat16 on CPU
    # (torch's CPU kernels accumulate in float32 internally)
    "cpu": _LOSSES | {"prod"},
    # CUDA: also the pointwise ops that lose range in float16, the reductions, softmax and the
    # normalisation statistics (batch_norm is absent: cuDNN takes float16 input with float32 stats)
    "cuda": _LOSSES | {"prod", "cumprod", "cumsum", "sum", "norm", "softmax", "log_softmax", "layer_norm",
                       "group_norm", "exp", "expm1", "log", "log1p", "log2", "log10", "pow", "reciprocal", "rsqrt",
                       "sinh", "cosh", "tan", "asin", "acos", "softplus", "logsumexp"},
}

#: the default autocast dtype of each device type, as torch
DEFAULT_DTYPE = {"cpu": "bfloat16", "cuda": "float16"}


def policy(device_type: str) -> dict:
    """``{op name: "lower" | "fp32"}`` for ``device_type`` (``'cpu'`` or ``'cuda'``)."""
    table = dict.fromkeys(FP32[device_type], "fp32")
    table.update(dict.fromkeys(LOWER[device_type], "lower"))
    return table


__all__ = ["LOWER", "FP32", "DEFAULT_DTYPE", "policy"]
