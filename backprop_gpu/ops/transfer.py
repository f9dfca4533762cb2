"""Moving tensors between devices and dtypes, differentiably."""
from __future__ import annotations

import numpy as np

from ..array import get_backend
from ..array.dtypes import looks_like_dtype
from ..tape import engine
from ..tape.mode import is_grad_enabled
from ..tape.op import Op, share_version
from ..tape.tensor import Tensor
from .elementwise import astype


class To(Op):
    """Copy to another backend; the VJP copies the gradient back."""
    name = "to"
    saves = ()

    @staticmethod
    def forward(F, x, src, dst):
        return _move(x, src, dst)

    @staticmethod
    def vjp(F, g, out, x, src, dst):
        if isinstance(g, Tensor):
            return (to(g, src),)
        return (_move(g, dst, src),)


def _move(arr, src, dst):
    if src.is_host and dst.is_host:
        return arr  # both are NumPy arrays on the host: no copy needed
    if not (src.is_host or dst.is_host):
        if src.device == dst.device:
            return arr  # cupy and numba-cuda on one GPU: the same memory, no copy
        with dst.arrays.cuda_device:  # GPU to GPU, never through the host
            return dst.xp.array(arr, copy=True)
    host = src.to_host(arr) if not src.is_host else arr
    return dst.asarray(host)


def to(x: Tensor, device=None, dtype=None) -> Tensor:
    """``x`` on ``device`` and/or as ``dtype``; ``x`` itself when nothing changes. As torch's, the first
    argument may be a dtype (``x.to(bg.float16)``) or a tensor, whose device and dtype are taken."""
    if isinstance(device, Tensor):
        device, dtype = device.backend, device.dtype if dtype is None else dtype
    elif dtype is None and device is not None and looks_like_dtype(device):
        device, dtype = None, device
    out = x
    if device is not None:
        dst = get_backend(device)
        if dst is not x.backend:
            out = _apply_to(x, dst)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = astype(out, dtype)
    return out


def _apply_to(x, dst):
    # apply() refuses mixed devices, and the output lives on dst: build the node by hand.
    arr = _move(x.array, x.backend, dst)
    same_storage = arr is x.array
    if same_storage and dst.device != x.device:
        # another device is other memory: a copy, as on a real GPU (the CUDA simulator's
        # arrays are host arrays too)
        arr = arr.copy()
        same_storage = False
    if is_grad_enabled() and x.requires_grad:
        res = Tensor._make(arr, dst, True)
        res._node = engine.Node(To, (x,), arr, res._version, {"src": x.backend, "dst": dst}, x.backend)
    else:
        res = Tensor._make(arr, dst)
    if same_storage:  # another backend on the same device shares the storage, so the version too
        res._version = x._version
        if res._node is not None:
            res._node.out_version = x._version
            share_version(x, res)
    return res
